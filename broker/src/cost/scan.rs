//! The scans of a document's text that run before it is parsed: its bracket nesting, and
//! the fields and aliases each definition writes out itself (steps 2 and 3 of [`super`]).

use super::{CostError, CostLimits};

/// The deepest bracket nesting of a GraphQL document, skipping strings, block strings and
/// comments (a `{` inside them is text). Unbalanced closing brackets are the parser's to
/// report.
pub(super) fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < text.len() {
        match text[i] {
            b'#' => {
                while i < text.len() && text[i] != b'\n' && text[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if text[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < text.len() && !text[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped triple quote inside a block string.
                    i += if text[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' && text[i] != b'\n' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

impl CostLimits {
    /// Counts, token by token, the fields and aliases each top-level definition (operation
    /// or fragment) writes in its own selection sets, and refuses the document as soon as
    /// one of them is over [`Self::max_fields`] or [`Self::max_aliases`]. The walk after
    /// parsing weighs every definition with its spreads expanded, which can only add to
    /// what is written: whatever this refuses, the walk would refuse with the same error.
    /// Arguments, variable definitions, directives and fragment spreads are skipped over;
    /// anything the scan does not understand is left to the parser.
    pub(super) fn check_written_selections(&self, text: &[u8]) -> Result<(), CostError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Frame {
            /// A selection set: its names at the top level are fields.
            Selection,
            /// An input object in an argument or a default value.
            Value,
        }
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Last {
            Other,
            Spread,
            At,
            Colon,
            On,
        }
        let mut frames: Vec<Frame> = Vec::new();
        let (mut parens, mut fields, mut aliases) = (0usize, 0u64, 0u64);
        let mut last = Last::Other;
        let mut i = 0;
        while i < text.len() {
            let selecting = parens == 0 && frames.last() == Some(&Frame::Selection);
            let byte = text[i];
            match byte {
                b'#' => {
                    while i < text.len() && text[i] != b'\n' && text[i] != b'\r' {
                        i += 1;
                    }
                    continue;
                }
                b'"' if text[i..].starts_with(b"\"\"\"") => {
                    i += 3;
                    while i < text.len() && !text[i..].starts_with(b"\"\"\"") {
                        i += if text[i..].starts_with(b"\\\"\"\"") {
                            4
                        } else {
                            1
                        };
                    }
                    i += 3;
                    last = Last::Other;
                    continue;
                }
                b'"' => {
                    i += 1;
                    while i < text.len() && text[i] != b'"' && text[i] != b'\n' {
                        i += if text[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                    last = Last::Other;
                    continue;
                }
                b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                    let start = i;
                    while i < text.len()
                        && matches!(text[i], b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9')
                    {
                        i += 1;
                    }
                    if selecting {
                        last = match last {
                            Last::Spread if &text[start..i] == b"on" => Last::On,
                            // A fragment's name, a type condition, a directive, or the
                            // field an alias names: not a field of its own.
                            Last::Spread | Last::On | Last::At | Last::Colon => Last::Other,
                            Last::Other => {
                                fields += 1;
                                if fields > self.max_fields {
                                    return Err(CostError::TooManyFields {
                                        limit: self.max_fields,
                                    });
                                }
                                Last::Other
                            }
                        };
                    } else {
                        last = Last::Other;
                    }
                    continue;
                }
                b'.' if text[i..].starts_with(b"...") => {
                    i += 3;
                    last = Last::Spread;
                    continue;
                }
                b'@' => last = Last::At,
                b':' if selecting => {
                    aliases += 1;
                    if aliases > self.max_aliases {
                        return Err(CostError::TooManyAliases {
                            limit: self.max_aliases,
                        });
                    }
                    last = Last::Colon;
                }
                b'(' => parens += 1,
                b')' => parens = parens.saturating_sub(1),
                b'{' => {
                    let value = parens > 0 || frames.last() == Some(&Frame::Value);
                    frames.push(if value {
                        Frame::Value
                    } else {
                        Frame::Selection
                    });
                    last = Last::Other;
                }
                b'}' => {
                    frames.pop();
                    if frames.is_empty() {
                        // The end of a definition: the next one counts afresh.
                        (fields, aliases) = (0, 0);
                    }
                    last = Last::Other;
                }
                b' ' | b'\t' | b'\n' | b'\r' | b',' => {}
                _ => last = Last::Other,
            }
            i += 1;
        }
        Ok(())
    }
}
