//! The `events/` sample events (also used with `sam local invoke`) and the names they use.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// The user the fixtures' tokens stand for.
pub const USER: &str = "user-a";
/// The board the fixtures use.
pub const BOARD: &str = "b1";
/// The connection id of the fixtures' WebSocket events.
pub const CONNECTION: &str = "L0SM9cOFvHcCIhw=";

/// `events/<name>`, with its token placeholder replaced.
pub fn fixture<T: DeserializeOwned>(name: &str, token: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("JWT_PLACEHOLDER", token);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}
