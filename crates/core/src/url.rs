//! Percent-encoding of text put into a URL's path segment or query value.

/// Every byte but RFC 3986's unreserved characters is encoded (`%XX`), so typed input can
/// never add a path segment, a parameter or a fragment.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_pass() {
        assert_eq!(super::percent_encode("H100"), "H100");
        assert_eq!(super::percent_encode("RTX 4090/&?#é"), "RTX%204090%2F%26%3F%23%C3%A9");
    }
}
