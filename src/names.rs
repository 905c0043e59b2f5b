//! Printing raw file names safely: names may hold any byte but '/' and NUL,
//! including newlines and invalid UTF-8, and a listing must stay one line per
//! entry and be reversible.

/// Escapes a name for display: printable UTF-8 is kept, backslash becomes
/// `\\`, and every other byte (control characters, invalid UTF-8) becomes
/// `\ooo` octal, as GNU tar and ls -b do.
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_str(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_str(&mut out, std::str::from_utf8(good).unwrap());
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\{b:03o}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn push_str(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:03o}"));
            }
        } else {
            out.push(c);
        }
    }
}

/// Reverses [`escape`]: turns a listed name back into raw bytes, so paths
/// printed by `restore -t` can be passed back on the command line.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\\' {
            out.push(b'\\');
            i += 2;
        } else if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Serialises raw name bytes with the listing escapes (lossless).
pub fn ser_bytes<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips() {
        for name in [
            &b"plain"[..],
            b"new\nline",
            b"back\\slash",
            b"\xff\xfe latin",
            "ünïcödé".as_bytes(),
            b"tab\there",
        ] {
            let e = escape(name);
            assert!(!e.contains('\n'));
            assert_eq!(unescape(&e), name, "{e}");
        }
    }
}
