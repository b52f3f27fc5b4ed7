//! What one GraphQL document may cost, checked before the app's schema sees it.
//!
//! async-graphql's own limits do not hold against hostile documents: its complexity counts
//! `__typename` as free, so a chain of fragments that each spread the next one twice costs
//! 2^depth fields for a few hundred bytes, and its validation rules and directive limit walk
//! fragment spreads again at every use. So the broker checks every document itself, in three
//! steps that each cost time linear in the document's length:
//! 1. its length ([`CostLimits::max_document_bytes`]), before anything else;
//! 2. a scan of its bytes for bracket nesting ([`CostLimits::max_nesting`]), so the parser
//!    never recurses deeper than that;
//! 3. a scan of its tokens that counts the fields and aliases each operation and fragment
//!    writes out itself: a lower bound of what it costs once its spreads are expanded, so a
//!    long flat document over the limits is refused at the cost of reading it, before the
//!    parser builds its tree;
//! 4. after parsing, one walk over every operation and fragment that computes the operation
//!    *as executed* (fields after fragment expansion, depth, aliases, directives). Each
//!    fragment's cost is computed once and reused at every spread, so a fragment bomb is
//!    priced in microseconds and refused.
//!
//! Only a document that passes reaches async-graphql's validation and the resolvers.

use std::collections::HashMap;

use async_graphql::ServerError;
use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::parser::{Positioned, parse_query};

/// The budget of one document. The defaults admit what real clients send (Apollo and Relay
/// documents of a few kilobytes, some fragments, a few aliases) with a wide margin, and keep
/// the worst document that passes well under a millisecond of checking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostLimits {
    /// Bytes of the GraphQL document (the `query` string).
    pub max_document_bytes: usize,
    /// Brackets (`{`, `(`, `[`) open at once anywhere in the document.
    pub max_nesting: usize,
    /// Operations defined in one document.
    pub max_operations: usize,
    /// Fields of one operation once fragments are expanded, `__typename` included.
    pub max_fields: u64,
    /// Nesting of selections of one operation once fragments are expanded.
    pub max_depth: usize,
    /// Fragment spreads inside fragment spreads.
    pub max_fragment_nesting: usize,
    /// Aliased fields of one operation once fragments are expanded.
    pub max_aliases: u64,
    /// Directives of one operation once fragments are expanded.
    pub max_directives: u64,
}

impl Default for CostLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: crate::settings::MAX_DOCUMENT_BYTES.default_value(),
            max_nesting: 64,
            max_operations: 16,
            max_fields: crate::settings::MAX_FIELDS.default_value(),
            max_depth: crate::settings::MAX_DEPTH.default_value(),
            max_fragment_nesting: 32,
            max_aliases: 100,
            max_directives: 64,
        }
    }
}

/// Why a document was refused: the message clients see as a GraphQL error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// The document's text is longer than allowed; refused before parsing.
    #[error("the document has {actual} bytes; at most {limit} are accepted")]
    DocumentTooLarge {
        /// The document's length in bytes.
        actual: usize,
        /// The most bytes allowed.
        limit: usize,
    },
    /// Brackets nest deeper than allowed; refused before parsing, so the parser's recursion
    /// stays bounded.
    #[error("the document nests brackets more than {limit} deep")]
    NestedTooDeep {
        /// The deepest nesting allowed.
        limit: usize,
    },
    /// The document defines more operations than allowed.
    #[error("the document defines more than {limit} operations")]
    TooManyOperations {
        /// The most operations allowed.
        limit: usize,
    },
    /// The operation selects more fields than allowed, counting each fragment spread in full.
    #[error("the operation selects more than {limit} fields once fragments are expanded")]
    TooManyFields {
        /// The most fields allowed.
        limit: u64,
    },
    /// Selections nest deeper than allowed.
    #[error("the operation is nested more than {limit} levels deep")]
    TooDeep {
        /// The deepest nesting of selections allowed.
        limit: usize,
    },
    /// Fragments spread other fragments deeper than allowed.
    #[error("fragments spread fragments more than {limit} levels deep")]
    FragmentsTooDeep {
        /// The deepest chain of spreads allowed.
        limit: usize,
    },
    /// The operation uses more aliases than allowed.
    #[error("the operation has more than {limit} aliases")]
    TooManyAliases {
        /// The most aliases allowed.
        limit: u64,
    },
    /// The operation uses more directives than allowed.
    #[error("the operation has more than {limit} directives")]
    TooManyDirectives {
        /// The most directives allowed.
        limit: u64,
    },
    /// A fragment spreads itself, directly or through others; the string is its name.
    #[error("fragment {0} spreads itself")]
    FragmentCycle(String),
}

impl From<CostError> for ServerError {
    fn from(error: CostError) -> Self {
        ServerError::new(error.to_string(), None)
    }
}

impl CostLimits {
    /// Parses `document` if it fits the budget. Parse errors come back as async-graphql
    /// reports them; a document over budget gets a [`CostError`].
    pub fn parse(&self, document: &str) -> Result<ExecutableDocument, ServerError> {
        self.check_text(document)?;
        let parsed = parse_query(document).map_err(ServerError::from)?;
        self.check_document(&parsed)?;
        Ok(parsed)
    }

    /// The checks that need no parsing: length, bracket nesting, and the fields and aliases
    /// each definition writes out.
    pub fn check_text(&self, document: &str) -> Result<(), CostError> {
        if document.len() > self.max_document_bytes {
            return Err(CostError::DocumentTooLarge {
                actual: document.len(),
                limit: self.max_document_bytes,
            });
        }
        if scan::nesting(document.as_bytes()) > self.max_nesting {
            return Err(CostError::NestedTooDeep {
                limit: self.max_nesting,
            });
        }
        self.check_written_selections(document.as_bytes())
    }

    /// The cost of every operation (and every fragment, used or not) of a parsed document.
    pub fn check_document(&self, document: &ExecutableDocument) -> Result<(), CostError> {
        let operations = document.operations.iter().count();
        if operations > self.max_operations {
            return Err(CostError::TooManyOperations {
                limit: self.max_operations,
            });
        }
        let mut walk = Walk {
            limits: self,
            fragments: &document.fragments,
            priced: HashMap::new(),
            visiting: Vec::new(),
        };
        for name in document.fragments.keys() {
            walk.fragment(name.as_str())?;
        }
        for (_, operation) in document.operations.iter() {
            let cost = walk.selection_set(&operation.node.selection_set)?;
            let directives = operation.node.directives.len() as u64;
            self.within(Cost {
                directives: cost.directives.saturating_add(directives),
                ..cost
            })?;
        }
        Ok(())
    }

    fn within(&self, cost: Cost) -> Result<Cost, CostError> {
        if cost.fields > self.max_fields {
            return Err(CostError::TooManyFields {
                limit: self.max_fields,
            });
        }
        if cost.depth > self.max_depth {
            return Err(CostError::TooDeep {
                limit: self.max_depth,
            });
        }
        if cost.fragment_depth > self.max_fragment_nesting {
            return Err(CostError::FragmentsTooDeep {
                limit: self.max_fragment_nesting,
            });
        }
        if cost.aliases > self.max_aliases {
            return Err(CostError::TooManyAliases {
                limit: self.max_aliases,
            });
        }
        if cost.directives > self.max_directives {
            return Err(CostError::TooManyDirectives {
                limit: self.max_directives,
            });
        }
        Ok(cost)
    }
}

/// What a selection costs once executed. Counts saturate: a refused document may be priced
/// far above any limit, never overflow.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    fields: u64,
    aliases: u64,
    directives: u64,
    depth: usize,
    /// Fragments spread inside fragments, at the deepest.
    fragment_depth: usize,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
            directives: self.directives.saturating_add(other.directives),
            depth: self.depth.max(other.depth),
            fragment_depth: self.fragment_depth.max(other.fragment_depth),
        }
    }
}

struct Walk<'a> {
    limits: &'a CostLimits,
    fragments: &'a HashMap<async_graphql::Name, Positioned<FragmentDefinition>>,
    /// Each fragment's cost, computed at its first spread and reused at the others.
    priced: HashMap<&'a str, Cost>,
    /// The fragments being priced, innermost last: a cycle, and how deep spreads nest.
    visiting: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn fragment(&mut self, name: &'a str) -> Result<Cost, CostError> {
        if let Some(cost) = self.priced.get(name) {
            return Ok(*cost);
        }
        // An unknown fragment costs nothing here; validation reports it.
        // The height of spreads is part of the cost, so the order fragments are priced in
        // does not matter; the stack check below only bounds this walk's own recursion.
        let Some(definition) = self.fragments.get(name) else {
            return Ok(Cost::default());
        };
        if self.visiting.contains(&name) {
            return Err(CostError::FragmentCycle(name.to_owned()));
        }
        if self.visiting.len() >= self.limits.max_fragment_nesting {
            return Err(CostError::FragmentsTooDeep {
                limit: self.limits.max_fragment_nesting,
            });
        }
        self.visiting.push(name);
        let cost = self.selection_set(&definition.node.selection_set);
        self.visiting.pop();
        let cost = cost?;
        let cost = self.limits.within(Cost {
            directives: cost
                .directives
                .saturating_add(definition.node.directives.len() as u64),
            fragment_depth: cost.fragment_depth + 1,
            ..cost
        })?;
        self.priced.insert(name, cost);
        Ok(cost)
    }

    /// Recursion follows the document's own nesting, which the text check bounded.
    fn selection_set(&mut self, set: &'a Positioned<SelectionSet>) -> Result<Cost, CostError> {
        let mut total = Cost::default();
        for selection in &set.node.items {
            let cost = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let inner = self.selection_set(&field.selection_set)?;
                    Cost {
                        fields: inner.fields.saturating_add(1),
                        aliases: inner
                            .aliases
                            .saturating_add(u64::from(field.alias.is_some())),
                        directives: inner
                            .directives
                            .saturating_add(field.directives.len() as u64),
                        depth: inner.depth + 1,
                        fragment_depth: inner.fragment_depth,
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let cost = self.fragment(spread.node.fragment_name.node.as_str())?;
                    Cost {
                        directives: cost
                            .directives
                            .saturating_add(spread.node.directives.len() as u64),
                        ..cost
                    }
                }
                Selection::InlineFragment(inline) => {
                    let cost = self.selection_set(&inline.node.selection_set)?;
                    Cost {
                        directives: cost
                            .directives
                            .saturating_add(inline.node.directives.len() as u64),
                        ..cost
                    }
                }
            };
            // Refuse as soon as the running total is over: no need to price the rest.
            total = self.limits.within(total.add(cost))?;
        }
        Ok(total)
    }
}

mod scan;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_flat_document_is_refused_before_it_is_parsed() {
        let limits = CostLimits::default();
        // Over the field limit, and not even a document: the scan refuses it before the
        // parser could say so.
        let flat = format!("subscription {{ {} }} }} {{ (", "a ".repeat(1_001));
        assert!(flat.len() < limits.max_document_bytes);
        let error = limits.parse(&flat).expect_err("refused");
        assert_eq!(
            error.message,
            CostError::TooManyFields { limit: 1_000 }.to_string()
        );
        let aliased = format!(
            "{{ {} }} }} (",
            (0..limits.max_aliases + 1)
                .map(|i| format!("a{i}: b"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let error = limits.parse(&aliased).expect_err("refused");
        assert_eq!(
            error.message,
            CostError::TooManyAliases {
                limit: limits.max_aliases
            }
            .to_string()
        );
    }

    #[test]
    fn the_scan_counts_no_more_than_the_walk() {
        // What is not a field of the definition it is written in: arguments, input objects,
        // strings, comments, directives, spreads, type conditions, variables' defaults, and
        // the fields of other definitions.
        let decoys = r##"
            query Q($v: In = {a: 1, b: {c: "{ d e f }"}}) @dir(x: [1, 2]) {
              # a comment { g h i }
              one(arg: {j: 1, k: """ { l m n \""" o } """}) @include(if: true) { two }
              alias: three
              ...F @skip(if: false)
              ... on Query { four }
              ... @include(if: true) { five }
            }
            fragment F on Query { six seven }
            mutation M { eight }
        "##;
        let walked = |limits: &CostLimits| {
            let parsed = parse_query(decoys).expect("a valid document");
            limits.check_document(&parsed)
        };
        // Query Q selects 5 fields itself (one, two, three, four, five) and two through
        // its spread: the walk's count is 7, the scan's 5.
        for max_fields in [5, 6, 7] {
            let limits = CostLimits {
                max_fields,
                ..CostLimits::default()
            };
            assert!(limits.check_text(decoys).is_ok(), "scan at {max_fields}");
            assert_eq!(
                walked(&limits).is_ok(),
                max_fields == 7,
                "walk at {max_fields}"
            );
        }
        let four = CostLimits {
            max_fields: 4,
            ..CostLimits::default()
        };
        assert!(matches!(
            four.check_text(decoys),
            Err(CostError::TooManyFields { limit: 4 })
        ));
        let no_alias = CostLimits {
            max_aliases: 0,
            ..CostLimits::default()
        };
        assert!(matches!(
            no_alias.check_text(decoys),
            Err(CostError::TooManyAliases { limit: 0 })
        ));
    }

    fn refused(document: &str) -> String {
        CostLimits::default()
            .parse(document)
            .expect_err("the document must be refused")
            .message
    }

    /// `{ ...F0 } fragment F0 on Query { ...F1 ...F1 } ... fragment Fn on Query { __typename }`
    pub(crate) fn fragment_bomb(levels: usize) -> String {
        let mut doc = String::from("{ ...F0 }\n");
        for i in 0..levels {
            doc.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        doc.push_str(&format!("fragment F{levels} on Query {{ __typename }}\n"));
        doc
    }

    #[test]
    fn an_ordinary_document_passes() {
        let document = r#"
            query Boards($id: ID!) { boards { id title ...B } b: boards @include(if: true) { id } }
            subscription Cards { cardAdded(boardId: "b1") { id title boardId } }
            fragment B on Board { id title __typename }
        "#;
        assert!(CostLimits::default().parse(document).is_ok());
    }

    #[test]
    fn a_fragment_bomb_is_priced_by_its_expansion_and_refused() {
        // 2^20 `__typename` fields from 800 bytes.
        let message = refused(&fragment_bomb(20));
        assert!(message.contains("more than 1000 fields"), "{message}");
        // A small one under the limit passes: 2^5 = 32 fields.
        assert!(CostLimits::default().parse(&fragment_bomb(5)).is_ok());
    }

    #[test]
    fn a_long_document_is_refused_before_parsing() {
        let document = format!("{{ boards(title: \"{}\") {{ id }} }}", "x".repeat(5 << 20));
        assert!(refused(&document).contains("at most 32768 are accepted"));
    }

    #[test]
    fn deep_brackets_are_refused_before_parsing() {
        let document = format!("{}{}", "{ a ".repeat(100), "}".repeat(100));
        assert!(refused(&document).contains("brackets more than 64 deep"));
        let list = format!("{{ a(x: {}1{}) }}", "[".repeat(100), "]".repeat(100));
        assert!(refused(&list).contains("brackets more than 64 deep"));
        // Brackets inside strings, block strings and comments are text.
        let text = format!(
            "{{ a(x: \"{0}\", y: \"\"\"{0}\"\"\") }} # {0}",
            "{".repeat(100)
        );
        assert!(CostLimits::default().check_text(&text).is_ok());
    }

    #[test]
    fn too_many_fields_are_refused() {
        let document = format!("{{ {} }}", "id ".repeat(1_001));
        assert!(refused(&document).contains("more than 1000 fields"));
    }

    #[test]
    fn depth_counts_through_fragments() {
        let limits = CostLimits {
            max_depth: 3,
            ..Default::default()
        };
        let document = "{ a { ...F } } fragment F on A { b { c { d } } }";
        let error = limits.parse(document).unwrap_err();
        assert!(
            error.message.contains("more than 3 levels"),
            "{}",
            error.message
        );
        assert!(
            limits
                .parse("{ a { ...F } } fragment F on A { b { c } }")
                .is_ok()
        );
    }

    #[test]
    fn aliases_are_counted_after_expansion() {
        let limits = CostLimits {
            max_aliases: 10,
            ..Default::default()
        };
        let document = "{ ...F ...F ...G } fragment F on Q { ...G } fragment G on Q { a1: id a2: id a3: id a4: id }";
        // F is spread twice and holds G (4 aliases): 2 * 4 + 4 = 12.
        assert!(
            limits
                .parse(document)
                .unwrap_err()
                .message
                .contains("more than 10 aliases")
        );
    }

    #[test]
    fn directives_are_counted_everywhere() {
        let document = format!("{{ id {} }}", "@skip(if: false) ".repeat(65));
        assert!(refused(&document).contains("more than 64 directives"));
        let on_spreads = format!(
            "{{ {} }} fragment F on Q {{ id }}",
            "...F @include(if: true) ".repeat(65)
        );
        assert!(refused(&on_spreads).contains("more than 64 directives"));
    }

    #[test]
    fn too_many_operations_are_refused() {
        let document: String = (0..17).map(|i| format!("query Q{i} {{ id }}\n")).collect();
        assert!(refused(&document).contains("more than 16 operations"));
    }

    #[test]
    fn fragment_chains_and_cycles_are_refused() {
        let mut chain = String::from("{ ...F0 }\n");
        for i in 0..40 {
            chain.push_str(&format!("fragment F{i} on Q {{ ...F{} }}\n", i + 1));
        }
        chain.push_str("fragment F40 on Q { id }");
        assert!(refused(&chain).contains("more than 32 levels"));
        let cycle = "{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }";
        assert!(refused(cycle).contains("spreads itself"));
    }

    #[test]
    fn unused_fragments_are_priced_too() {
        // Validation walks every fragment, so an unused bomb is refused as well.
        let document = fragment_bomb(20).replacen("{ ...F0 }", "{ id }", 1);
        assert!(refused(&document).contains("more than 1000 fields"));
    }
}
