//! URLs without their secrets, for every URL that reaches a log line, an error or the store.
//!
//! A URL can carry credentials in two places: the userinfo (`user:password@`) and the query
//! (`?api-token=...`). Both are replaced by `***`, as is a fragment; the scheme, host, port, path
//! and the query's parameter names stay, so the message still says where a request went.
//!
//! It works on text, not on a parsed URL: what must be redacted is often a URL that did not parse
//! (an endpoint refused for that very reason) or one quoted inside another error's message
//! (reqwest's "error sending request for url (...)"). When in doubt it hides more, never less.

/// What stands in for a secret.
const HIDDEN: &str = "***";

/// `url` with its userinfo, query values and fragment replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (url, fragment) = match url.split_once('#') {
        Some((u, _)) => (u, true),
        None => (url, false),
    };
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    if scheme.is_none() && holds_dynatrace_token(rest) {
        // A token pasted where the endpoint goes (they sit side by side in Dynatrace's setup).
        return HIDDEN.to_owned();
    }
    let mut out = String::with_capacity(url.len() + 8);
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    // A '@' anywhere before the query may end a userinfo (one with a '/' in its password breaks
    // the usual authority rules): everything up to the last one is hidden.
    match rest.rfind('@') {
        Some(at) => {
            out.push_str(HIDDEN);
            out.push_str(&rest[at..]);
        }
        None => out.push_str(rest),
    }
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={HIDDEN}"),
                // A bare `?value` may be the secret itself.
                None if pair.is_empty() => String::new(),
                None => HIDDEN.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if fragment {
        out.push('#');
        out.push_str(HIDDEN);
    }
    out
}

/// Whether `text` holds something shaped like a Dynatrace access token (`dt0c01.`, `dt0s16.`:
/// `dt0`, a letter, two digits, a dot).
fn holds_dynatrace_token(text: &str) -> bool {
    text.as_bytes().windows(7).any(|w| {
        w.starts_with(b"dt0")
            && w[3].is_ascii_alphabetic()
            && w[4].is_ascii_digit()
            && w[5].is_ascii_digit()
            && w[6] == b'.'
    })
}

/// `text` with every URL in it (`scheme://...` up to whitespace, a quote, `<`, `>` or `)`)
/// passed through [`redact_url`]: for error messages that quote a URL, such as reqwest's.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let len = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(rest.len() - sep);
        let end = sep + len;
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_query_values_and_fragments_are_hidden() {
        assert_eq!(
            redact_url(
                "https://user:pw0SECRET@tenant.example/platform/x?api-token=dt0c01.SECRET&b=2#frag"
            ),
            "https://***@tenant.example/platform/x?api-token=***&b=***#***"
        );
        assert_eq!(redact_url("https://h/p?SECRET"), "https://h/p?***");
        assert_eq!(redact_url("https://h:8443/p"), "https://h:8443/p");
        // A password with a '/' still ends at the last '@'.
        assert_eq!(redact_url("https://u:a/SECRET@h/p"), "https://***@h/p");
        // Not a URL at all: still nothing after a '@' or in a query survives.
        assert_eq!(redact_url("u:SECRET@h"), "***@h");
        // A token given as the endpoint is not echoed; a host without a scheme is.
        assert_eq!(redact_url("dt0c01.ABCDEFGH.SECRETPART"), "***");
        assert_eq!(redact_url(" dt0s16.X.SECRET"), "***");
        assert_eq!(
            redact_url("abc.live.dynatrace.com/p"),
            "abc.live.dynatrace.com/p"
        );
    }

    #[test]
    fn urls_inside_a_message_are_redacted_and_the_rest_kept() {
        let msg =
            "error sending request for url (https://u:SECRET@h/x?token=SECRET): connection refused";
        let r = redact_urls(msg);
        assert_eq!(
            r,
            "error sending request for url (https://***@h/x?token=***): connection refused"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(
            redact_urls("a http://h/?k=SECRET b https://h2/?x=SECRET2"),
            "a http://h/?k=*** b https://h2/?x=***"
        );
    }
}
