//! multipart/related bodies (RFC 2387), as WADO-RS answers and STOW-RS takes them: the
//! boundary from the Content-Type, the parts split out of a body already read whole (and
//! bounded), and a body of DICOM parts built.

use anyhow::{bail, Result};

/// One part: its Content-Type (empty when it has none) and its bytes.
pub struct Part<'a> {
    pub content_type: String,
    pub body: &'a [u8],
}

/// A parameter of a Content-Type header (`boundary`, `type`), unquoted; names are not
/// case-sensitive.
pub fn param(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The media type of a Content-Type header, lower case, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// `needle` in `hay` from `from` on, in linear time (memchr's two-way search: an archive's
/// body built to make a naive search quadratic cannot).
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = hay.get(from..)?;
    memchr::memmem::find(rest, needle).map(|i| i + from)
}

/// The parts of a multipart `body` whose Content-Type is `content_type`: at most `most`,
/// refused as the next one is reached.
pub fn parts<'a>(body: &'a [u8], content_type: &str, most: usize) -> Result<Vec<Part<'a>>> {
    if !media_type(content_type).starts_with("multipart/") {
        bail!("not a multipart body (Content-Type {content_type:?})");
    }
    let Some(boundary) = param(content_type, "boundary").filter(|b| !b.is_empty()) else {
        bail!("a multipart body without a boundary (Content-Type {content_type:?})");
    };
    if boundary.len() > MAX_BOUNDARY {
        bail!(
            "a multipart boundary of {} characters (at most {MAX_BOUNDARY})",
            boundary.len()
        );
    }
    let delim = format!("--{boundary}").into_bytes();
    let next_delim = format!("\r\n--{boundary}").into_bytes();
    // The first delimiter may open the body, without a line break before it.
    let mut at = if body.starts_with(&delim) {
        delim.len()
    } else {
        match find(body, &next_delim, 0) {
            Some(i) => i + next_delim.len(),
            None => bail!("a multipart body without its boundary"),
        }
    };
    let mut out = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(out);
        }
        if out.len() == most {
            bail!("a multipart body of more than {most} part(s)");
        }
        // The rest of the delimiter's line (transport padding), then the part's headers.
        let Some(eol) = find(body, b"\r\n", at) else {
            bail!("a multipart body cut after a boundary");
        };
        let head_start = eol + 2;
        let (headers, content) = if body[head_start..].starts_with(b"\r\n") {
            ("", head_start + 2)
        } else {
            let Some(end) = find(body, b"\r\n\r\n", head_start) else {
                bail!("a multipart body cut in a part's headers");
            };
            (
                std::str::from_utf8(&body[head_start..end]).unwrap_or(""),
                end + 4,
            )
        };
        let Some(stop) = find(body, &next_delim, content) else {
            bail!("a multipart body cut in a part (no closing boundary)");
        };
        let content_type = headers
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        out.push(Part {
            content_type,
            body: &body[content..stop],
        });
        at = stop + next_delim.len();
    }
}

/// A multipart/related body of DICOM files: the body and its Content-Type.
pub fn dicom_body(files: &[&[u8]]) -> (Vec<u8>, String) {
    // A boundary no file holds (a random one almost surely; checked all the same).
    let boundary = loop {
        let b = format!("ppdenoise-{:032x}", rand::random::<u128>());
        if !files
            .iter()
            .any(|f| f.windows(b.len()).any(|w| w == b.as_bytes()))
        {
            break b;
        }
    };
    let mut body = Vec::with_capacity(files.iter().map(|f| f.len() + 100).sum());
    for f in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        body,
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_body_splits_back_into_its_parts() {
        let a: &[u8] = b"first\r\n--not-the-boundary\r\n";
        let b: &[u8] = b"";
        let (body, ct) = dicom_body(&[a, b]);
        let p = parts(&body, &ct, 2).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].body, a);
        assert_eq!(p[1].body, b);
        assert_eq!(p[0].content_type, "application/dicom");
        assert_eq!(
            param(&ct, "TYPE").as_deref(),
            Some("application/dicom"),
            "{ct}"
        );
    }

    #[test]
    fn a_quoted_boundary_a_preamble_and_cut_bodies() {
        let ct = "Multipart/Related; type=\"application/dicom\"; boundary=\"b 1\"";
        let body = b"preamble\r\n--b 1\r\nContent-Type: application/dicom\r\n\r\nXY\r\n--b 1--\r\n";
        let p = parts(body, ct, 1).unwrap();
        assert_eq!((p.len(), p[0].body), (1, &b"XY"[..]));
        let e = parts(&body[..40], ct, 1).err().unwrap().to_string();
        assert!(e.contains("cut"), "{e}");
        assert!(parts(body, "application/dicom", 1).is_err());
        assert!(parts(body, "multipart/related", 1).is_err());
    }

    /// A body of a million empty parts is refused at the second when one is asked for (the
    /// rest never parsed); a boundary longer than RFC 2046's 70 characters is refused.
    #[test]
    fn parts_past_the_count_and_long_boundaries_are_refused() {
        let ct = "multipart/related; boundary=b";
        let mut body = b"--b\r\n\r\n".repeat(1_000_000);
        body.extend_from_slice(b"\r\n--b--\r\n");
        let e = parts(&body, ct, 1).err().unwrap().to_string();
        assert!(e.contains("more than 1 part"), "{e}");
        let long = format!("multipart/related; boundary={}", "x".repeat(71));
        let e = parts(b"--x", &long, 1).err().unwrap().to_string();
        assert!(e.contains("71 characters"), "{e}");
    }
}
