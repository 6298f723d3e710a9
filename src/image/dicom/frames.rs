//! The bytes of each frame of encapsulated pixel data, taken in one place: the pre-decode
//! checks read them and the decoders are given them, nothing else (issue 45, item 2).
//!
//! The Basic Offset Table says where each frame starts; the registry's decoders followed it
//! while the checks read the fragments in order, so a table pointing at a second stream hid
//! that stream from the checks. Here a frame is its fragments in order (one frame: all of
//! them; several: one fragment each), and a table that says otherwise is refused.

use std::borrow::Cow;

use super::scan::ScanError;

/// One frame's bytes, and how many fragments they came from.
pub(super) struct Frame<'a> {
    pub bytes: Cow<'a, [u8]>,
    pub fragments: usize,
}

/// Each frame's bytes, in order, for `frames` frames in `fragments` with the offset table
/// `table` (the fragments' start offsets, counted from the first fragment's item header).
pub(super) fn frames<'a>(
    table: &[u32],
    fragments: &'a [Vec<u8>],
    frames: usize,
) -> Result<Vec<Frame<'a>>, ScanError> {
    if fragments.is_empty() {
        return Err(ScanError::Corrupt(
            "encapsulated pixel data without a fragment".into(),
        ));
    }
    if frames == 1 {
        // One frame starts at the first fragment; a table that names another start, or more
        // than one frame, disagrees with the single frame the header declares.
        if !(table.is_empty() || table == [0]) {
            return Err(ScanError::Corrupt(format!(
                "its Basic Offset Table ({}) disagrees with its single frame, which starts at \
                 offset 0",
                shown(table)
            )));
        }
        let bytes = if fragments.len() == 1 {
            Cow::Borrowed(fragments[0].as_slice())
        } else {
            Cow::Owned(fragments.concat())
        };
        return Ok(vec![Frame {
            bytes,
            fragments: fragments.len(),
        }]);
    }
    if fragments.len() != frames {
        return Err(ScanError::Unsupported(format!(
            "{frames} frames in {} fragments; a multi-frame image is read with one fragment per \
             frame",
            fragments.len()
        )));
    }
    // One fragment per frame: the table, if any, must give each fragment's start (its item
    // header is 8 bytes).
    if !table.is_empty() {
        let mut start = 0u64;
        for (k, f) in fragments.iter().enumerate() {
            if table.get(k).map(|&t| u64::from(t)) != Some(start) {
                return Err(ScanError::Corrupt(format!(
                    "its Basic Offset Table ({}) disagrees with its fragments: frame {} is the \
                     fragment at offset {start}",
                    shown(table),
                    k + 1
                )));
            }
            start += f.len() as u64 + 8;
        }
        if table.len() != frames {
            return Err(ScanError::Corrupt(format!(
                "its Basic Offset Table has {} entries for {frames} frames",
                table.len()
            )));
        }
    }
    Ok(fragments
        .iter()
        .map(|f| Frame {
            bytes: Cow::Borrowed(f.as_slice()),
            fragments: 1,
        })
        .collect())
}

/// A table for an error: its first entries.
fn shown(table: &[u32]) -> String {
    let head: Vec<String> = table.iter().take(4).map(u32::to_string).collect();
    let more = if table.len() > 4 { ", ..." } else { "" };
    format!("{}{more}", head.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_that_disagrees_with_the_fragments_is_refused() {
        let f = vec![vec![1u8; 10], vec![2u8; 6], vec![3u8; 4]];
        // One frame in three fragments: its bytes in order, with no table or [0].
        for table in [&[][..], &[0]] {
            let one = frames(table, &f, 1).unwrap();
            assert_eq!(one[0].bytes.len(), 20);
            assert_eq!(one[0].fragments, 3);
        }
        // A table pointing at the second fragment (a second stream), or listing two frames.
        for table in [&[18][..], &[0, 18]] {
            let e = frames(table, &f, 1).err().unwrap();
            assert!(matches!(&e, ScanError::Corrupt(d) if d.contains("Basic Offset Table")));
        }
        // Three frames: the table must be the fragments' starts.
        assert_eq!(frames(&[0, 18, 32], &f, 3).unwrap().len(), 3);
        assert_eq!(frames(&[], &f, 3).unwrap()[2].bytes.as_ref(), &[3u8; 4]);
        for table in [&[0, 18, 30][..], &[0, 18], &[0, 18, 32, 44], &[18, 0, 32]] {
            assert!(matches!(
                frames(table, &f, 3),
                Err(ScanError::Corrupt(d)) if d.contains("Basic Offset Table")
            ));
        }
        assert!(matches!(frames(&[], &f, 2), Err(ScanError::Unsupported(_))));
        assert!(frames(&[], &[], 1).is_err());
    }
}
