//! The web app (`web/`) in headless Chromium against the local mode, and the local mode's
//! part in it: serving the built app at `/` and the development sign-in at `/dev/token`.
//! `scripts/test-deps` installs Chromium and the app's packages and builds `web/dist`.
//!
//! The browser test writes its screenshot to `target/web/tabs.png`, or to `WEB_SCREENSHOT`
//! when set: `WEB_SCREENSHOT=$PWD/docs/images/web-tabs.png cargo nextest run -p broker-tests
//! --test web_app` regenerates the README's picture.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use broker::DeliveryMode;
use broker_tests::local::*;
use local_gateway::WebOptions;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test-deps (it installs Debian's chromium)",
        path.display()
    );
    path
}

fn built_app() -> PathBuf {
    let dist = repo().join("web/dist");
    assert!(
        dist.join("index.html").is_file()
            && repo().join("web/node_modules/puppeteer-core").is_dir(),
        "the web app is not built: run scripts/test-deps (scripts/test-all does)"
    );
    dist
}

async fn start_with_web(web: WebOptions) -> local_gateway::LocalGateway {
    let mut options = options(DeliveryMode::Stream);
    options.web = web;
    start(options).await
}

async fn mint(gateway: &local_gateway::LocalGateway, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/dev/token", gateway.addr()))
        .json(&body)
        .send()
        .await
        .expect("HTTP request")
}

#[tokio::test]
async fn two_tabs_of_one_user_stay_in_sync_in_chromium_and_another_user_sees_nothing() {
    let gateway = start_with_web(WebOptions {
        dir: Some(built_app()),
        dev_tokens: true,
        ..WebOptions::default()
    })
    .await;
    let screenshot = std::env::var_os("WEB_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/web/tabs.png"));
    if let Some(dir) = screenshot.parent() {
        std::fs::create_dir_all(dir).expect("screenshot folder");
    }
    let _ = std::fs::remove_file(&screenshot);

    let mut browser = tokio::process::Command::new("node")
        .arg(repo().join("web/test/two-tabs.mjs"))
        .arg("--url")
        .arg(gateway.web_url())
        .arg("--chromium")
        .arg(chromium())
        .arg("--screenshot")
        .arg(&screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    // The script has its own per-step limits; this one only keeps a wedged browser from
    // hanging the suite.
    let run = answer_the_script(&gateway, &mut browser);
    let (lines, disconnected) = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finished");
    let output = browser.wait_with_output().await.expect("node exits");
    gateway.shutdown().await;

    let line = lines.last().cloned().unwrap_or_default();
    let result: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "the browser test printed no result: {lines:?}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success() && result["ok"] == true,
        "{result:#}"
    );
    // Three alice tabs were open: the first, the reopened one, and the one that closed.
    assert_eq!(
        disconnected,
        Some(2),
        "alice's open tabs when the server closed them"
    );
    let cards = ["Write the README", "Record a demo", "Ship it"];
    assert_eq!(
        result["alice"],
        json!([{"title": "Launch plan", "cards": cards}])
    );
    assert_eq!(
        result["bob"],
        json!([{"title": "Bob's errands", "cards": []}])
    );
    assert_eq!(
        result["reopened"],
        json!([{"title": "Launch plan", "cards": [cards[0], cards[1], cards[2], "Celebrate"]}])
    );
    // While offline the tab showed neither the missed card nor a live badge; back online it
    // caught up and went on live.
    assert_eq!(result["whileOffline"]["shown"], result["reopened"]);
    assert_ne!(result["whileOffline"]["connection"], "live");
    let recovered = [
        cards[0],
        cards[1],
        cards[2],
        "Celebrate",
        "Missed while offline",
        "Live again",
    ];
    assert_eq!(
        result["recovered"],
        json!([{"title": "Launch plan", "cards": recovered}])
    );
    assert_eq!(result["afterDelete"], json!([]));
    assert_is_png(&screenshot);
}

/// Reads the script's output lines, doing what it asks: `{"ask":"disconnect alice"}` closes
/// all of alice's sockets from the server (as a backend would through the Management API),
/// then answers with a line. Returns every line, and how many sockets were closed.
async fn answer_the_script(
    gateway: &local_gateway::LocalGateway,
    browser: &mut tokio::process::Child,
) -> (Vec<String>, Option<usize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stdin = browser.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(browser.stdout.take().expect("piped stdout")).lines();
    let (mut lines, mut disconnected) = (Vec::new(), None);
    while let Some(line) = stdout.next_line().await.expect("read the script's output") {
        let asked = serde_json::from_str::<Value>(&line)
            .ok()
            .map(|v| v["ask"].clone());
        if asked == Some(json!("disconnect alice")) {
            let closed = gateway
                .broker()
                .disconnect_user(&"alice".into(), broker::CloseCode::Normal)
                .await
                .expect("disconnect alice");
            disconnected = Some(closed);
            stdin.write_all(b"done\n").await.expect("answer the script");
        }
        lines.push(line);
    }
    (lines, disconnected)
}

#[tokio::test]
async fn a_build_for_a_deployed_stack_has_its_urls_built_in_and_signs_in_with_a_pasted_token() {
    built_app();
    // The port first: the build needs the URLs, the gateway needs the build.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let out = repo().join(format!("target/web/deployed-{}", addr.port()));
    let build = tokio::process::Command::new("node")
        .arg(repo().join("web/build.mjs"))
        .arg("--outdir")
        .arg(&out)
        .env("BROKER_HTTP_URL", format!("http://{addr}/graphql"))
        .env("BROKER_WS_URL", format!("ws://{addr}/graphql"))
        .env_remove("BROKER_TOKEN_URL")
        .output()
        .await
        .expect("node runs");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // Served from the same origin here (the URLs could be anywhere); the bundle names them.
    let bundle = std::fs::read_to_string(out.join("app.js")).unwrap();
    assert!(bundle.contains(&format!("ws://{addr}/graphql")));
    assert!(bundle.contains(&format!("http://{addr}/graphql")));
    let mut options = options(DeliveryMode::Stream);
    // As on AWS: no development sign-in.
    options.web = WebOptions {
        dir: Some(out.clone()),
        dev_tokens: false,
        ..WebOptions::default()
    };
    let gateway = local_gateway::LocalGateway::start(listener, options)
        .await
        .unwrap();
    let carol = token(&gateway, "carol");

    let run = tokio::process::Command::new("node")
        .arg(repo().join("web/test/deployed-build.mjs"))
        .arg("--url")
        .arg(gateway.web_url())
        .arg("--token")
        .arg(&carol)
        .arg("--chromium")
        .arg(chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finished")
        .expect("node runs");
    gateway.shutdown().await;
    std::fs::remove_dir_all(&out).unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| {
            panic!(
                "no result: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(
        output.status.success() && result["ok"] == true,
        "{result:#}"
    );
    assert_eq!(
        result["nameSignIn"], false,
        "a deployed build offers no name sign-in"
    );
    assert_eq!(result["user"], "carol");
    assert_eq!(result["boards"], json!(["Deployed"]));
}

fn assert_is_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        path.display()
    );
}

#[tokio::test]
async fn the_development_sign_in_mints_a_working_token_and_refuses_odd_names() {
    let gateway = start_with_web(WebOptions {
        dir: None,
        dev_tokens: true,
        ..WebOptions::default()
    })
    .await;
    let response = mint(&gateway, json!({"user": "alice"})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"], "alice");
    let token = body["token"].as_str().expect("a token");
    let board = create_board(&gateway, token, "minted").await;
    let boards = http_graphql(&gateway, token, "{ boards { id } }", json!({})).await;
    assert_eq!(boards["data"]["boards"], json!([{"id": board}]));

    for odd in [
        json!({"user": ""}),
        json!({"user": "a b"}),
        json!({"user": "x".repeat(65)}),
    ] {
        let response = mint(&gateway, odd.clone()).await;
        assert_eq!(response.status(), 400, "{odd}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{odd}: {body}");
    }
    let not_json = reqwest::Client::new()
        .post(format!("http://{}/dev/token", gateway.addr()))
        .body("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_the_development_sign_in_there_is_no_token_endpoint() {
    let gateway = start_with_web(WebOptions::default()).await;
    assert_eq!(mint(&gateway, json!({"user": "alice"})).await.status(), 404);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_app_is_served_at_the_root_and_graphql_stays_at_its_path() {
    let dir = std::env::temp_dir().join(format!("broker-web-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>the app</p>").unwrap();
    std::fs::write(dir.join("app.js"), "console.log(1)").unwrap();
    let gateway = start_with_web(WebOptions {
        dir: Some(dir.clone()),
        dev_tokens: false,
        ..WebOptions::default()
    })
    .await;
    let get = |path: &str| {
        let url = format!("http://{}{path}", gateway.addr());
        async move { reqwest::get(url).await.unwrap() }
    };

    let index = get("/").await;
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html");
    assert_eq!(index.text().await.unwrap(), "<p>the app</p>");
    let script = get("/app.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );

    let missing = get("/nope.js").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("scripts/build-web"));
    // Nothing outside the folder is reachable.
    assert_eq!(get("/../Cargo.toml").await.status(), 404);
    assert_eq!(get("/%2e%2e/Cargo.toml").await.status(), 404);

    // GraphQL keeps its route: without a token it is a 401, not a file.
    assert_eq!(get("/graphql?query={boards{id}}").await.status(), 401);
    assert_eq!(get("/health").await.status(), 200);
    gateway.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}
