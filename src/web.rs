//! Small HTTP helpers shared by the two control endpoints (the DNS node's and the site
//! proxy's); depends on no other module.

/// Decodes `%XX` escapes in a path segment (a member id such as `pool%2F192.0.2.1%3A80`);
/// anything that is not a valid escape is kept as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
