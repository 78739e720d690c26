//! An HTTP error answer's body, read only as far as a message needs.
//!
//! An error body is read to say what the server said, and nothing that size can say needs more
//! than [`ERROR_BODY_CAP`]. Reading it whole (`Response::text`) would let a broken or hostile
//! server (or a gzip bomb: reqwest decompresses as it reads) fill memory before the message is
//! cut to a few hundred characters. The body is streamed chunk by chunk and reading stops at the
//! cap; the connection is then dropped rather than reused, which is the cheaper loss.

/// The most bytes of an error body that are read (after decompression).
pub const ERROR_BODY_CAP: usize = 64 * 1024;

/// At most `cap` bytes of `resp`'s body as text (lossy UTF-8), and whether there was more. A
/// body that breaks off is what arrived until then: an error answer is read for its message, and
/// a broken one is no reason to lose the status.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> (String, bool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut more = false;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            more = true;
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    (String::from_utf8_lossy(&buf).into_owned(), more)
}
