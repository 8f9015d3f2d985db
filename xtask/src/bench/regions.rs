//! Generated regions of a Markdown file: the lines between
//!
//! ```text
//! <!-- generated: NAME -->
//! <!-- end generated -->
//! ```
//!
//! belong to the report, which rewrites them; everything outside them is
//! the authors' and is kept byte for byte. Each marker is a line of its own.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::cmd::Result;

/// The opening marker of region `name`.
pub fn start_marker(name: &str) -> String {
    format!("<!-- generated: {name} -->")
}

/// The closing marker of every region.
pub const END_MARKER: &str = "<!-- end generated -->";

/// A region: its name and the byte range of its content (from the line after
/// the opening marker to the start of the closing marker's line).
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// The name in the opening marker.
    pub name: String,
    /// The content's bytes in the text.
    pub content: Range<usize>,
}

/// The name of an opening marker line.
fn opening(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix("<!-- generated:")?;
    Some(inner.strip_suffix("-->")?.trim())
}

/// Every region of `text`, in order. Fails on a marker out of place: an
/// opening marker inside a region or without a name, a closing marker
/// outside one, a region left open, or a name used twice.
pub fn find(text: &str) -> Result<Vec<Region>> {
    let mut regions: Vec<Region> = Vec::new();
    let mut open: Option<(String, usize, usize)> = None;
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let line_no = n + 1;
        let next = at + line.len();
        if let Some(name) = opening(line) {
            if let Some((outer, from, _)) = &open {
                return Err(format!(
                    "line {line_no}: region {name:?} opens inside region {outer:?} (line {from})"
                ));
            }
            if name.is_empty() {
                return Err(format!("line {line_no}: a generated region without a name"));
            }
            if regions.iter().any(|r| r.name == name) {
                return Err(format!("line {line_no}: a second region {name:?}"));
            }
            open = Some((name.to_string(), line_no, next));
        } else if line.trim() == END_MARKER {
            let Some((name, _, content)) = open.take() else {
                return Err(format!("line {line_no}: {END_MARKER} outside a region"));
            };
            regions.push(Region {
                name,
                content: content..at,
            });
        }
        at = next;
    }
    match open {
        Some((name, from, _)) => Err(format!("region {name:?} (line {from}) has no {END_MARKER}")),
        None => Ok(regions),
    }
}

/// `text` with the content of each region named in `new` replaced by its
/// value (set off by blank lines). Regions not in `new` are kept as they
/// are; a name in `new` without a region is an error, and so is any marker
/// out of place (see [`find`]).
pub fn replace(text: &str, new: &BTreeMap<String, String>) -> Result<String> {
    let regions = find(text)?;
    if let Some(name) = new.keys().find(|n| !regions.iter().any(|r| &r.name == *n)) {
        return Err(format!(
            "no region {name:?}: add the lines `{}` and `{END_MARKER}` where it belongs",
            start_marker(name)
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut kept = 0;
    for r in &regions {
        let Some(body) = new.get(&r.name) else {
            continue;
        };
        out.push_str(&text[kept..r.content.start]);
        out.push('\n');
        out.push_str(body.trim_matches('\n'));
        out.push_str("\n\n");
        kept = r.content.end;
    }
    out.push_str(&text[kept..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Title\n\
        Prose before, kept.\n\
        \n\
        <!-- generated: one -->\n\
        old one\n\
        <!-- end generated -->\n\
        Between | kept |\n\
        <!-- generated: two -->\n\
        \n\
        old two\n\
        \n\
        <!-- end generated -->\n\
        After, kept, no final newline";

    fn new(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_the_regions_in_order() {
        let r = find(DOC).unwrap();
        let names: Vec<_> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(&DOC[r[0].content.clone()], "old one\n");
        assert_eq!(&DOC[r[1].content.clone()], "\nold two\n\n");
    }

    #[test]
    fn replaces_the_content_and_nothing_else() {
        let out = replace(DOC, &new(&[("two", "| a |\n| --- |\n")])).unwrap();
        let r = &find(DOC).unwrap()[1];
        let tail = &DOC[r.content.end..];
        assert!(out.starts_with(&DOC[..r.content.start]));
        assert!(out.ends_with(tail));
        assert_eq!(
            &out[r.content.start..out.len() - tail.len()],
            "\n| a |\n| --- |\n\n"
        );
        // Region one untouched; replacing again gives the same text.
        assert!(out.contains("<!-- generated: one -->\nold one\n<!-- end generated -->"));
        assert_eq!(
            replace(&out, &new(&[("two", "| a |\n| --- |")])).unwrap(),
            out
        );
        // Nothing to replace: the text comes back as it was.
        assert_eq!(replace(DOC, &BTreeMap::new()).unwrap(), DOC);
    }

    #[test]
    fn a_missing_region_is_an_error() {
        let e = replace(DOC, &new(&[("one", "x"), ("three", "y")])).unwrap_err();
        assert!(e.contains("\"three\""), "{e}");
        assert!(e.contains("<!-- generated: three -->"), "{e}");
    }

    #[test]
    fn markers_out_of_place_are_errors() {
        let unclosed = "<!-- generated: a -->\ntext\n";
        assert!(
            find(unclosed)
                .unwrap_err()
                .contains("no <!-- end generated -->")
        );
        let nested = "<!-- generated: a -->\n<!-- generated: b -->\n<!-- end generated -->\n";
        assert!(find(nested).unwrap_err().contains("inside region"));
        let stray = "text\n<!-- end generated -->\n";
        assert!(find(stray).unwrap_err().contains("outside a region"));
        let twice = "<!-- generated: a -->\n<!-- end generated -->\n\
                     <!-- generated: a -->\n<!-- end generated -->\n";
        assert!(find(twice).unwrap_err().contains("second region"));
        let unnamed = "<!-- generated: -->\n<!-- end generated -->\n";
        assert!(find(unnamed).unwrap_err().contains("without a name"));
        // An error leaves nothing half done: replace fails as find does.
        assert!(replace(stray, &BTreeMap::new()).is_err());
    }
}
