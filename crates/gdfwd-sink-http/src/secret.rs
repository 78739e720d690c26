//! A wrapper for the API token that cannot leak by accident.
//!
//! `Debug` and `Display` print a fixed placeholder, there is no `Serialize`, and the only way to
//! the value is [`Secret::expose`], which the HTTP layer calls once per request to build the
//! `Authorization` header (marked sensitive there, so hyper's own logs redact it too).

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token itself. Call sites: building the `Authorization` header, comparing tokens.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_do_not_show_the_value() {
        let s = Secret::new("dt0c01.ABCDEF.SECRETPART");
        let shown = format!("{s:?} {s} {s:#?} {:?}", Some(&s));
        assert!(!shown.contains("SECRETPART"), "{shown}");
        assert!(!shown.contains("dt0c01"), "{shown}");
        assert_eq!(s.expose(), "dt0c01.ABCDEF.SECRETPART");
    }
}
