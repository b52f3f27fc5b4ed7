//! GraphQL documents built to hurt: what the cost limits must refuse cheaply.

/// `{ ...F0 } fragment F0 on Query { ...F1 ...F1 } ... fragment F{levels} on Query { __typename }`:
/// 2^`levels` fields from a few dozen bytes a level (2^20 fields from about 800 bytes).
pub fn fragment_bomb(levels: usize) -> String {
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
