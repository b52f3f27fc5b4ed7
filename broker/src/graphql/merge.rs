//! One execution for the stored documents of one subscriber that differ only in what they
//! select: different aliases, different subsets of fields, the same root field.
//!
//! Each document, with its variables, is reduced once per process to its [`Shape`]: the
//! fields it selects by name and arguments, without aliases, variables of built-in scalar
//! types replaced by their values. Documents of the same subscriber with the same root field
//! (and arguments) are merged into one [`Union`] document that selects every field any of
//! them selects, each under a generated alias. The union is executed once per event;
//! each subscriber's payload is its own selection read out of the union's result, under its
//! own response keys and in its own order.
//!
//! A document takes part only when that is exactly equivalent to running it alone: no
//! fragments (their type conditions need the schema to resolve) and no directives
//! (`@skip`/`@include` depend on variables, others on the app). When the union's result
//! carries any error, each document is executed on its own instead: an error's path and
//! null propagation belong to the document that asked for the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet, Type,
};
use async_graphql::{Name, Value};
use async_graphql_value::Value as Literal;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::cost::CostLimits;

/// Fields a union may hold, whatever the cost limits allow. A union that would grow past
/// its bound is not extended: the next documents start another one.
pub(crate) const MAX_UNION_FIELDS: usize = 512;

/// Bytes of text a union may hold, whatever the cost limits allow: like
/// [`MAX_UNION_FIELDS`], a bound on what is built per event.
pub(crate) const MAX_UNION_BYTES: usize = 32 * 1024;

/// Bytes a node adds to the union's text beside its name and arguments: its alias
/// (`m511: `), a space and braces.
const NODE_BYTES: usize = 10;

/// The operation name of every union document.
pub(crate) const UNION_OPERATION: &str = "BrokerMerged";

/// What a subscription document selects, without aliases.
#[derive(Debug, PartialEq)]
pub(crate) struct Shape {
    /// The variables a union of this shape declares and is executed with: none when the
    /// document's variables are all of built-in scalar types, whose values are then written
    /// into the arguments; otherwise the document's own, which its union partners must
    /// share.
    bound: Bound,
    root: Field,
}

#[derive(Debug, PartialEq)]
struct Bound {
    /// The variable definitions, printed (with their parentheses), or empty.
    declarations: String,
    /// The variables as JSON text, the same for every member; empty with no declarations.
    text: String,
    values: serde_json::Value,
}

#[derive(Debug, PartialEq)]
struct Field {
    /// The response key the document gave it.
    key: Name,
    /// The field's name and arguments, printed with the arguments sorted by name and
    /// variables of built-in scalar types replaced by their values: two selections with the
    /// same `id` resolve the same value.
    id: String,
    children: Vec<Field>,
}

/// A variable as the arguments see it.
enum Variable {
    /// Its value, as a GraphQL literal. A nullable variable neither given nor defaulted is
    /// `null`, as async-graphql passes it (the argument's own default does not apply).
    Value(String),
    /// Kept as a variable: the union declares it.
    Declared,
}

impl Shape {
    /// The shape of `document`'s operation `operation_name` (or its only one) run with
    /// `variables`, when it is a subscription made only of fields without directives, with
    /// one root field.
    pub(crate) fn of(
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &serde_json::Value,
    ) -> Option<Self> {
        let operation = selected(document, operation_name)?;
        if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
            return None;
        }
        let definitions: Vec<_> = operation
            .variable_definitions
            .iter()
            .map(|d| &d.node)
            .collect();
        if definitions.iter().any(|d| !d.directives.is_empty()) {
            return None;
        }
        // An enum's value is a string in JSON and a bare name in a document, and input
        // objects may hold enums: only built-in scalars are written into the arguments.
        let inline = definitions.iter().all(|d| built_in(&d.var_type.node));
        let mut scope = HashMap::new();
        let mut bound = Bound {
            declarations: String::new(),
            text: String::new(),
            values: serde_json::Value::Object(Default::default()),
        };
        for (i, definition) in definitions.iter().enumerate() {
            let name = definition.name.node.clone();
            if !inline {
                let separator = if i == 0 { "(" } else { ", " };
                let (ty, out) = (&definition.var_type.node, &mut bound.declarations);
                write!(out, "{separator}${name}: {ty}").ok()?;
                if let Some(default) = &definition.default_value {
                    out.push_str(" = ");
                    literal(out, &default.node.clone().into_value(), &scope)?;
                }
                scope.insert(name, Variable::Declared);
                continue;
            }
            let variable = match variables.get(name.as_str()) {
                Some(value) => Variable::Value(json_literal(value)?),
                None => match &definition.default_value {
                    Some(default) => {
                        let mut out = String::new();
                        literal(&mut out, &default.node.clone().into_value(), &scope)?;
                        Variable::Value(out)
                    }
                    // Validation refuses it when the document runs on its own.
                    None if !definition.var_type.node.nullable => return None,
                    None => Variable::Value("null".to_owned()),
                },
            };
            scope.insert(name, variable);
        }
        if !bound.declarations.is_empty() {
            bound.declarations.push(')');
            bound.text = variables.to_string();
            bound.values = variables.clone();
        }
        let mut roots = fields(&operation.selection_set.node, &scope)?;
        if roots.len() != 1 {
            return None;
        }
        Some(Self {
            bound,
            root: roots.remove(0),
        })
    }

    /// Documents whose shapes have the same merge key can share one union (given the same
    /// subscriber, which the caller compares).
    pub(crate) fn merge_key(&self) -> (&str, &str, &str) {
        (&self.bound.declarations, &self.bound.text, &self.root.id)
    }
}

/// Whether values of type `ty` read the same from JSON and from a GraphQL literal.
fn built_in(ty: &Type) -> bool {
    match &ty.base {
        BaseType::Named(name) => {
            ["String", "ID", "Int", "Float", "Boolean"].contains(&name.as_str())
        }
        BaseType::List(item) => built_in(item),
    }
}

fn selected<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    let mut operations = document.operations.iter();
    match operation_name {
        Some(name) => operations
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))
            .map(|(_, op)| &op.node),
        None => {
            let (_, first) = operations.next()?;
            operations.next().is_none().then_some(&first.node)
        }
    }
}

/// The fields of a selection set, those with the same response key merged (valid GraphQL
/// gives them the same name and arguments).
fn fields(set: &SelectionSet, scope: &HashMap<Name, Variable>) -> Option<Vec<Field>> {
    let mut out: Vec<Field> = Vec::new();
    for selection in &set.items {
        let Selection::Field(field) = &selection.node else {
            return None;
        };
        let field = &field.node;
        if !field.directives.is_empty() {
            return None;
        }
        let mut arguments: Vec<_> = field.arguments.iter().collect();
        arguments.sort_by(|a, b| a.0.node.cmp(&b.0.node));
        let mut id = field.name.node.to_string();
        for (i, (name, value)) in arguments.iter().enumerate() {
            let separator = if i == 0 { "(" } else { ", " };
            write!(id, "{separator}{}: ", name.node).ok()?;
            literal(&mut id, &value.node, scope)?;
        }
        if !arguments.is_empty() {
            id.push(')');
        }
        let children = fields(&field.selection_set.node, scope)?;
        let key = field.response_key().node.clone();
        match out.iter_mut().find(|f| f.key == key) {
            // A scalar asked twice is one value.
            Some(same) if same.id == id && children.is_empty() && same.children.is_empty() => {}
            // A field with a selection asked twice: async-graphql merges the two results by
            // rules of its own (objects key by key, lists of lists not at all), and a
            // different name or arguments under one key is invalid. Such a document runs on
            // its own.
            Some(_) => return None,
            None => out.push(Field { key, id, children }),
        }
    }
    Some(out)
}

/// Writes `value` as a GraphQL literal, its variables as `scope` says. `None` for what has
/// no literal: an undeclared variable, binary data.
fn literal(out: &mut String, value: &Literal, scope: &HashMap<Name, Variable>) -> Option<()> {
    match value {
        Literal::Variable(name) => match scope.get(name)? {
            Variable::Value(text) => out.push_str(text),
            Variable::Declared => write!(out, "${name}").ok()?,
        },
        // A JSON string is a GraphQL string with the same escapes.
        Literal::String(text) => out.push_str(&serde_json::to_string(text).ok()?),
        Literal::Number(number) => write!(out, "{number}").ok()?,
        Literal::Boolean(b) => write!(out, "{b}").ok()?,
        Literal::Null => out.push_str("null"),
        Literal::Enum(name) => out.push_str(name),
        Literal::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                literal(out, item, scope)?;
            }
            out.push(']');
        }
        Literal::Object(map) => {
            out.push('{');
            for (i, (name, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write!(out, "{name}: ").ok()?;
                literal(out, item, scope)?;
            }
            out.push('}');
        }
        Literal::Binary(_) => return None,
    }
    Some(())
}

/// A JSON variable value of a built-in scalar type (or a list of them) as a GraphQL literal.
/// `None` for an object, which no such type takes.
fn json_literal(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value as Json;
    Some(match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => serde_json::to_string(s).ok()?,
        Json::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(json_literal).collect();
            format!("[{}]", items?.join(", "))
        }
        Json::Object(_) => return None,
    })
}

/// One document selecting every field of its members' shapes, and where each member's
/// selection is found in its result.
pub(crate) struct Union {
    declarations: String,
    variables: serde_json::Value,
    root: Node,
    plans: Vec<Plan>,
    size: Size,
    /// Every node is aliased: the cost limits' aliases and fields bound the nodes, their
    /// document size the text.
    bound: Size,
}

struct Node {
    id: String,
    alias: Name,
    children: Vec<Node>,
}

/// Where a member's field is in the union's result, and the key it gets in the member's
/// payload.
struct Plan {
    key: Name,
    alias: Name,
    children: Vec<Plan>,
}

impl Union {
    /// A union of one shape, within `limits`; [`Union::add`] merges more.
    pub(crate) fn new(shape: &Shape, limits: &CostLimits) -> Self {
        let mut root = Node {
            id: shape.root.id.clone(),
            alias: Name::new("m0"),
            children: Vec::new(),
        };
        let header = "subscription  {}".len() + UNION_OPERATION.len();
        let mut size = Size {
            fields: 1,
            bytes: header + shape.bound.declarations.len() + shape.root.id.len() + NODE_BYTES,
        };
        let plan = Plan {
            key: shape.root.key.clone(),
            alias: root.alias.clone(),
            children: merge(&mut root.children, &shape.root.children, &mut size),
        };
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            declarations: shape.bound.declarations.clone(),
            variables: shape.bound.values.clone(),
            root,
            plans: vec![plan],
            size,
            bound: Size {
                fields: MAX_UNION_FIELDS
                    .min(to_usize(limits.max_aliases))
                    .min(to_usize(limits.max_fields)),
                bytes: MAX_UNION_BYTES.min(limits.max_document_bytes),
            },
        }
    }

    /// Merges `shape` as the next member, unless the union would outgrow its bound
    /// ([`MAX_UNION_FIELDS`], [`MAX_UNION_BYTES`], the cost limits). `shape` must have this
    /// union's merge key.
    pub(crate) fn add(&mut self, shape: &Shape) -> bool {
        debug_assert_eq!(shape.merge_key().0, self.declarations);
        debug_assert_eq!(shape.merge_key().2, self.root.id);
        let more = missing(&self.root.children, &shape.root.children);
        if self.size.fields + more.fields > self.bound.fields
            || self.size.bytes + more.bytes > self.bound.bytes
        {
            return false;
        }
        let children = merge(
            &mut self.root.children,
            &shape.root.children,
            &mut self.size,
        );
        self.plans.push(Plan {
            key: shape.root.key.clone(),
            alias: self.root.alias.clone(),
            children,
        });
        true
    }

    /// The variables the union is executed with.
    pub(crate) fn variables(&self) -> &serde_json::Value {
        &self.variables
    }

    pub(crate) fn members(&self) -> usize {
        self.plans.len()
    }

    /// The union's document text, with the operation [`UNION_OPERATION`].
    pub(crate) fn document(&self) -> String {
        let mut text = format!("subscription {UNION_OPERATION}{} ", self.declarations);
        text.push('{');
        print(&mut text, std::slice::from_ref(&self.root));
        text.push('}');
        text
    }

    /// Member `member`'s payload: its selection read from the union's `data`, beside the
    /// union's `extensions`. `None` when the data lacks a field the member selects.
    pub(crate) fn payload(
        &self,
        member: usize,
        data: &Value,
        extensions: &BTreeMap<String, Value>,
    ) -> Option<String> {
        #[derive(Serialize)]
        struct Payload<'a> {
            data: Projected<'a>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            extensions: &'a BTreeMap<String, Value>,
        }
        let payload = Payload {
            data: Projected {
                value: data,
                plans: std::slice::from_ref(&self.plans[member]),
            },
            extensions,
        };
        serde_json::to_string(&payload).ok()
    }
}

/// Nodes of a union, and the bytes of their ids.
#[derive(Default)]
struct Size {
    fields: usize,
    bytes: usize,
}

/// Merges `fields` into `nodes`, counting what it adds: the member's plan.
fn merge(nodes: &mut Vec<Node>, fields: &[Field], size: &mut Size) -> Vec<Plan> {
    fields
        .iter()
        .map(|field| {
            let index = match nodes.iter().position(|n| n.id == field.id) {
                Some(index) => index,
                None => {
                    nodes.push(Node {
                        id: field.id.clone(),
                        alias: Name::new(format!("m{}", nodes.len())),
                        children: Vec::new(),
                    });
                    size.fields += 1;
                    size.bytes += field.id.len() + NODE_BYTES;
                    nodes.len() - 1
                }
            };
            let node = &mut nodes[index];
            Plan {
                key: field.key.clone(),
                alias: node.alias.clone(),
                children: merge(&mut node.children, &field.children, size),
            }
        })
        .collect()
}

/// What merging `fields` into `nodes` would add.
fn missing(nodes: &[Node], fields: &[Field]) -> Size {
    let mut size = Size::default();
    for field in fields {
        let more = match nodes.iter().find(|n| n.id == field.id) {
            Some(node) => missing(&node.children, &field.children),
            None => whole(field),
        };
        size.fields += more.fields;
        size.bytes += more.bytes;
    }
    size
}

fn whole(field: &Field) -> Size {
    let mut size = Size {
        fields: 1,
        bytes: field.id.len() + NODE_BYTES,
    };
    for child in &field.children {
        let more = whole(child);
        size.fields += more.fields;
        size.bytes += more.bytes;
    }
    size
}

fn print(text: &mut String, nodes: &[Node]) {
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&node.alias);
        text.push_str(": ");
        text.push_str(&node.id);
        if !node.children.is_empty() {
            text.push_str(" {");
            print(text, &node.children);
            text.push('}');
        }
    }
}

/// A member's view of the union's result, serialized without building it.
struct Projected<'a> {
    value: &'a Value,
    plans: &'a [Plan],
}

impl Serialize for Projected<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.plans.is_empty() {
            return self.value.serialize(serializer);
        }
        match self.value {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(self.plans.len()))?;
                for plan in self.plans {
                    let value = map
                        .get(plan.alias.as_str())
                        .ok_or_else(|| S::Error::custom("a merged field is missing"))?;
                    out.serialize_entry(
                        plan.key.as_str(),
                        &Projected {
                            value,
                            plans: &plan.children,
                        },
                    )?;
                }
                out.end()
            }
            Value::List(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for value in items {
                    out.serialize_element(&Projected {
                        value,
                        plans: self.plans,
                    })?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape_with(text: &str, variables: &serde_json::Value) -> Option<Shape> {
        Shape::of(&CostLimits::default().parse(text).unwrap(), None, variables)
    }

    fn shape(text: &str) -> Option<Shape> {
        shape_with(text, &json!({}))
    }

    #[test]
    fn a_shape_forgets_aliases_argument_order_and_variable_names() {
        let a = shape_with(
            "subscription($b: ID!) { x: card(board: $b, n: 1) { y: id id title } }",
            &json!({"b": "k\"1"}),
        );
        let b = shape_with(
            "subscription($other: ID!) { card(n: 1, board: $other) { id title } }",
            &json!({"other": "k\"1"}),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.merge_key(), b.merge_key());
        assert_eq!(a.merge_key(), ("", "", r#"card(board: "k\"1", n: 1)"#));
        let keys: Vec<&str> = a.root.children.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["y", "id", "title"]);
    }

    #[test]
    fn variables_become_literals_as_graphql_reads_them() {
        let text = "subscription($n: Int = 3, $tags: [String!], $on: Boolean) \
                    { feed(n: $n, tags: $tags, on: $on) { id } }";
        let given = shape_with(text, &json!({"tags": ["a", "b"], "on": null})).unwrap();
        // A default fills in; an explicit null stays.
        assert_eq!(
            given.merge_key().2,
            r#"feed(n: 3, on: null, tags: ["a", "b"])"#
        );
        // A nullable variable neither given nor defaulted is null, as async-graphql passes
        // it: the argument's own default does not apply.
        let absent = shape_with(text, &json!({"n": 1})).unwrap();
        assert_eq!(absent.merge_key().2, "feed(n: 1, on: null, tags: null)");
        // A required one not given is for validation to refuse.
        assert!(shape_with("subscription($n: Int!) { feed(n: $n) { id } }", &json!({})).is_none());
        // An object for a scalar variable is too.
        assert!(
            shape_with(
                "subscription($n: Int) { feed(n: $n) { id } }",
                &json!({"n": {}})
            )
            .is_none()
        );
    }

    #[test]
    fn variables_of_other_types_stay_declared_and_must_be_shared() {
        let text = "subscription($kind: Kind!, $b: ID!) { card(kind: $kind, board: $b) { id } }";
        let a = shape_with(text, &json!({"kind": "TODO", "b": "1"})).unwrap();
        assert_eq!(
            a.merge_key(),
            (
                "($kind: Kind!, $b: ID!)",
                r#"{"b":"1","kind":"TODO"}"#,
                "card(board: $b, kind: $kind)"
            )
        );
        let other = shape_with(text, &json!({"kind": "DONE", "b": "1"})).unwrap();
        assert_ne!(a.merge_key(), other.merge_key());
        let union = Union::new(&a, &CostLimits::default());
        assert_eq!(union.variables(), &json!({"kind": "TODO", "b": "1"}));
        assert_eq!(
            union.document(),
            "subscription BrokerMerged($kind: Kind!, $b: ID!) \
             {m0: card(board: $b, kind: $kind) {m0: id}}"
        );
    }

    #[test]
    fn documents_the_union_cannot_express_have_no_shape() {
        for text in [
            "subscription { card { ...F } } fragment F on Card { id }",
            "subscription { card { ... on Card { id } } }",
            "subscription($s: Boolean!) { card { id @skip(if: $s) } }",
            "subscription @deprecated { card { id } }",
            "subscription { a { id } b { id } }",
            "query { card { id } }",
            // async-graphql merges the results of a field asked twice by rules of its own.
            "subscription { card { owner { id } owner { name } } }",
            "subscription { card { o: owner { id } o: owner { id } } }",
        ] {
            assert!(shape(text).is_none(), "{text}");
        }
        // A scalar asked twice is one value.
        assert!(shape("subscription { card { id id t: title t: title } }").is_some());
        // Two operations and no name: no operation is selected.
        let document = CostLimits::default()
            .parse("subscription A { a } subscription B { b }")
            .unwrap();
        assert!(Shape::of(&document, None, &json!({})).is_none());
        assert!(Shape::of(&document, Some("B"), &json!({})).is_some());
    }

    #[test]
    fn a_union_selects_each_field_once_and_stops_growing_at_its_bound() {
        let a = shape("subscription { c: card(board: \"1\") { id t: title } }").unwrap();
        let b = shape("subscription { card(board: \"1\") { title owner { id } } }").unwrap();
        let limits = CostLimits::default();
        let mut union = Union::new(&a, &limits);
        assert!(union.add(&b));
        assert!(union.add(&a));
        assert_eq!(union.members(), 3);
        assert_eq!(
            union.document(),
            "subscription BrokerMerged \
             {m0: card(board: \"1\") {m0: id m1: title m2: owner {m0: id}}}"
        );

        let wide = |from: usize, n: usize| {
            let fields: Vec<String> = (from..from + n).map(|i| format!("f{i}")).collect();
            shape(&format!("subscription {{ r {{ {} }} }}", fields.join(" "))).unwrap()
        };
        // Every node is aliased: the cost limits' 100 aliases bound the union.
        let mut union = Union::new(&wide(0, 40), &limits);
        assert!(union.add(&wide(20, 40)), "61 fields fit");
        assert!(!union.add(&wide(100, 40)), "101 fields do not");
        assert!(union.add(&wide(10, 40)), "nothing new fits");
        assert_eq!(union.members(), 3);
        // Beyond the cost limits, its own bound.
        let roomy = CostLimits {
            max_aliases: 10_000,
            max_fields: 10_000,
            max_document_bytes: 1 << 20,
            ..CostLimits::default()
        };
        let mut union = Union::new(&wide(0, 300), &roomy);
        assert!(union.add(&wide(100, 300)), "400 fields fit");
        assert!(!union.add(&wide(1_000, 300)), "700 fields do not");

        // Few fields, long arguments.
        let long = |c: char| {
            let text = c.to_string().repeat(20_000);
            shape(&format!("subscription {{ r {{ f(s: \"{text}\") }} }}")).unwrap()
        };
        let mut union = Union::new(&long('a'), &limits);
        assert!(
            !union.add(&long('b')),
            "40 KB of arguments do not fit in 32 KB"
        );
        assert!(union.add(&long('a')));
    }
}
