//! A `.npy` array's header read within bounds: its length and the bytes its shape declares,
//! known before ndarray-npy reads it (ndarray-npy allocates from the header's shape before
//! reading the data, so a crafted header of a few bytes could ask for gigabytes). Model
//! `.npz` files (`crate::import::npz`) and noise maps (`crate::model::noise_map`) are checked
//! through it.

use std::io::Read;

use py_literal::Value;

/// Longest `.npy` header accepted: numpy and ndarray-npy write 128 bytes for an array of
/// numbers, whatever its shape (numpy's own `np.load` refuses over 10000 bytes by default,
/// against the same slow parsing).
const MAX_HEADER: usize = 1024;
/// The most bytes a `.npy` header takes: magic, version, length field and dictionary.
pub const MAX_HEADER_BYTES: u64 = 8 + 4 + MAX_HEADER as u64;

/// Deepest nesting of brackets a `.npy` header may have: numpy writes 2 for an array of
/// plain numbers (the dictionary and its shape tuple), all a model file holds; a structured
/// dtype's fields (a list of tuples) are deeper and refused.
const MAX_HEADER_DEPTH: usize = 3;

/// Reads a `.npy` header (format versions 1-3). Returns the header's length in bytes and,
/// for a floating-point array, shape x element size in bytes (`None` for other types).
pub fn declared(r: &mut impl Read) -> Result<(u64, Option<u64>), String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|_| "not a .npy array (too short)".to_string())?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (no NUMPY magic)".into());
    }
    let (hlen, len_bytes) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| "truncated .npy header")?;
            (u16::from_le_bytes(b) as usize, 2)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| "truncated .npy header")?;
            (u32::from_le_bytes(b) as usize, 4)
        }
        v => return Err(format!(".npy format version {v} (1 to 3 supported)")),
    };
    if hlen > MAX_HEADER {
        return Err(format!(".npy header of {hlen} bytes"));
    }
    let mut h = vec![0u8; hlen];
    r.read_exact(&mut h).map_err(|_| "truncated .npy header")?;
    let text = String::from_utf8(h).map_err(|_| ".npy header is not text")?;
    let header_len = (8 + len_bytes + hlen) as u64;
    Ok((header_len, float_bytes(&text)?))
}

/// Shape x element size of a floating-point array from its header dictionary, parsed as
/// ndarray-npy parses it; a key given twice is refused (ndarray-npy would take the last).
fn float_bytes(text: &str) -> Result<Option<u64>, String> {
    // py_literal's parser backtracks on nested openers, exponentially in their depth and
    // linearly in their number: headers nested 15 deep took it 11 s, 20 and 27 deep over two
    // minutes (found by afl++), 60 kB of groups 8 deep 15 s. Brackets in strings count
    // too: a model header has none there, and counting them all leaves nothing to hide
    // nesting in.
    let depth = text
        .chars()
        .scan(0usize, |d, c| {
            match c {
                '{' | '[' | '(' => *d += 1,
                '}' | ']' | ')' => *d = d.saturating_sub(1),
                _ => {}
            }
            Some(*d)
        })
        .max()
        .unwrap_or(0);
    if depth > MAX_HEADER_DEPTH {
        return Err(format!(
            ".npy header nests brackets {depth} deep (at most {MAX_HEADER_DEPTH})"
        ));
    }
    // Nor operators, signs, points or escapes, which no header of an array of numbers has,
    // and which py_literal's expression rules try several ways each (10 kB of `1+1+...` in
    // braces nested 3 deep took it 176 ms).
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || "'\"{}()[],:<>|=_".contains(c)
    };
    if let Some(c) = text.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            ".npy header holds {c:?}, which no header of an array of numbers has"
        ));
    }
    let value: Value = text
        .trim_end()
        .parse()
        .map_err(|e| format!("unreadable .npy header: {e}"))?;
    let Value::Dict(pairs) = value else {
        return Err(".npy header is not a dictionary".into());
    };
    let one = |key: &str| -> Result<Option<&Value>, String> {
        let mut found = pairs
            .iter()
            .filter(|(k, _)| matches!(k, Value::String(s) if s == key));
        let first = found.next().map(|(_, v)| v);
        match found.next() {
            Some(_) => Err(format!(".npy header gives '{key}' twice")),
            None => Ok(first),
        }
    };
    let descr = one("descr")?.ok_or(".npy header has no 'descr'")?;
    let shape = one("shape")?.ok_or(".npy header has no 'shape'")?;
    let item = match descr {
        Value::String(d) => match d.trim_start_matches(['<', '>', '=', '|']) {
            "f8" => 8u64,
            "f4" => 4,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let Value::Tuple(dims) = shape else {
        return Err(".npy header's shape is not a tuple".into());
    };
    let mut bytes = item;
    for d in dims {
        let Value::Integer(d) = d else {
            return Err(".npy header's shape holds a non-integer".into());
        };
        let d = u64::try_from(d).map_err(|_| format!("dimension {d} in the .npy header"))?;
        bytes = bytes
            .checked_mul(d)
            .ok_or_else(|| format!("shape {dims:?} overflows"))?;
    }
    Ok(Some(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.npy` array's bytes: header `header`, then `data` zero bytes.
    pub(crate) fn npy(header: &str, data: usize) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    #[test]
    fn header_sizes() {
        let bytes = |h: &str| declared(&mut &npy(h, 0)[..]).map(|(_, b)| b);
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (39, 1521), }";
        assert_eq!(bytes(h), Ok(Some(39 * 1521 * 8)));
        let s = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
        assert_eq!(bytes(s), Ok(Some(4)));
        let t = "{'descr': '<U17', 'fortran_order': False, 'shape': (), }";
        assert_eq!(bytes(t), Ok(None));
        let huge = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        assert!(bytes(huge).is_err());
        // ndarray-npy takes the last of a repeated key: refused, whatever the first says.
        let twice = "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), 'shape': (9, 9), }";
        assert!(bytes(twice).unwrap_err().contains("twice"));
        let descr2 = "{'descr': '|u1', 'fortran_order': False, 'shape': (8,), 'descr': '<f8'}";
        assert!(bytes(descr2).unwrap_err().contains("twice"));
        assert!(declared(&mut &b"\x93NUMPX\x01\x00\x00\x00"[..]).is_err());
    }

    /// Nested openers, on which py_literal's parser backtracks for minutes (an input afl++
    /// found): refused before it parses them.
    #[test]
    fn deeply_nested_headers_are_refused_before_parsing() {
        let bytes = |h: &str| declared(&mut &npy(h, 0)[..]).map(|(_, b)| b);
        let found = "{{{{{{{{{{{{{{', 'fortran_order': False, 'shape': ()}";
        assert!(bytes(found).unwrap_err().contains("15 deep"));
        let lists = format!(
            "{{'descr': '<f8', 'shape': {}8{}}}",
            "[(".repeat(9),
            ")]".repeat(9)
        );
        assert!(bytes(&lists).unwrap_err().contains("19 deep"));
        let fields = "{'descr': [('a', '<f8', (2, 3)), ('b', '<i4')], 'fortran_order': False, 'shape': (4,), }";
        assert!(bytes(fields).unwrap_err().contains("4 deep"));
        let pair =
            "{'descr': [('a', '<f8'), ('b', '<i4')], 'fortran_order': False, 'shape': (4,), }";
        assert_eq!(bytes(pair), Ok(None));
        // At the bound, py_literal gets the header and refuses it as malformed.
        let at_bound = format!("{}'descr'", "{".repeat(MAX_HEADER_DEPTH));
        assert!(bytes(&at_bound).unwrap_err().contains("unreadable"));
        let sums = format!(
            "{{'descr': '<U1', 'shape': (), 'x': {{{{1{}}}}}}}",
            "+1".repeat(200)
        );
        assert!(bytes(&sums).unwrap_err().contains("'+'"));
        // Past numpy's own bound on a header's length.
        let long = format!(
            "{{'descr': '<f8', 'shape': (1,), 'pad': '{}'}}",
            " ".repeat(MAX_HEADER)
        );
        assert!(bytes(&long).unwrap_err().contains("header of"));
    }
}
