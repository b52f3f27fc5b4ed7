//! The floor: a raw WebSocket echo round trip on loopback, with the same client library and
//! the same runtime layout as the broker cases, and no broker in between.

use std::time::Instant;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{Latencies, Percentiles};

/// Round trips sent before measuring (connection warm-up).
const WARM_UP: usize = 50;

/// A frame of the size of a delivery (`next` with a card).
fn frame() -> String {
    serde_json::json!({
        "id": "1",
        "type": "next",
        "payload": {"data": {"cardAdded": {
            "id": "01JABCDEFGHJKMNPQRSTVWXYZ0",
            "title": "bench 0123456789abcdef #12345",
        }}},
    })
    .to_string()
}

/// Measures `round_trips` sequential echo round trips: the echo server runs on `server`,
/// the client on `client`.
pub fn measure(
    server: &Runtime,
    client: &Runtime,
    round_trips: usize,
) -> anyhow::Result<Percentiles> {
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let echo = server.spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                return;
            }
            let echoed = message.is_text() || message.is_binary();
            if echoed && socket.send(message).await.is_err() {
                return;
            }
        }
    });
    let result = client.block_on(async move {
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), None, true)
                .await
                .context("connect to the echo server")?;
        let frame = frame();
        let mut latencies = Latencies::new();
        for i in 0..WARM_UP + round_trips {
            let started = Instant::now();
            socket.send(Message::Text(frame.clone().into())).await?;
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(_))) => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the echo server closed"),
                }
            }
            if i >= WARM_UP {
                latencies.record(started.elapsed());
            }
        }
        let _ = socket.close(None).await;
        Ok(latencies.summary())
    });
    echo.abort();
    result
}
