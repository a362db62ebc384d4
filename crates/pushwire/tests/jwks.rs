//! Token keys from a JWK set (`--jwks-url`, `--publisher-jwks-url`,
//! `--subscriber-jwks-url`) and several static keys per role, against the
//! real server: the set is served by a small HTTP server of the test's own
//! on 127.0.0.1 that counts its requests, can be switched to another set
//! and can answer 500. Rotation, the unknown-`kid` refresh and its rate
//! limit, a key server that fails, `file://` sets, and the algorithm rules
//! that must hold whatever the set says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushwire::auth::jwt::ON_DEMAND_INTERVAL;
use pushwire_testkit::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = pushwire_testkit::hub_binary!();
const OLD_SECRET: &str = "the old signing secret, thirty-two bytes or more";
const NEW_SECRET: &str = "the new signing secret, thirty-two bytes or more";

/// What the key server answers.
struct Answer {
    status: u16,
    body: String,
}

/// A JWK set over HTTP/1.1 on 127.0.0.1, one answer per connection.
struct KeyServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(keys: &[Value]) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            body: set(keys),
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let (shared, count) = (answer.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (shared, count) = (shared.clone(), count.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let reply = {
                        let answer = shared.lock().unwrap();
                        format!(
                            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                            answer.status,
                            answer.body.len(),
                            answer.body
                        )
                    };
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        KeyServer {
            addr,
            answer,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn serve(&self, keys: &[Value]) {
        *self.answer.lock().unwrap() = Answer {
            status: 200,
            body: set(keys),
        };
    }

    fn fail(&self) {
        *self.answer.lock().unwrap() = Answer {
            status: 500,
            body: "{}".to_owned(),
        };
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn oct(kid: &str, secret: &str) -> Value {
    json!({"kty": "oct", "kid": kid, "use": "sig", "k": URL_SAFE_NO_PAD.encode(secret)})
}

fn token(kid: Option<&str>, secret: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn subscriber(kid: &str, secret: &str) -> String {
    token(
        Some(kid),
        secret,
        json!({"sub": "reader", "mercure": {"subscribe": ["*"]}}),
    )
}

fn publisher(kid: Option<&str>, secret: &str) -> String {
    token(kid, secret, json!({"mercure": {"publish": ["*"]}}))
}

/// The status of a stream opened with `token`; the stream is dropped.
async fn stream_status(addr: SocketAddr, token: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    let stream = SseClient::connect_with(
        addr,
        "/api/v1/stream?topic=news",
        &[("Authorization", &bearer)],
    )
    .await;
    stream.status
}

async fn publish_with(addr: SocketAddr, token: &str, data: &str) -> u16 {
    let bearer = format!("Bearer {token}");
    let body = json!({"to": {"topics": ["news"]}, "data": data}).to_string();
    request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        body.as_bytes(),
    )
    .await
    .status
}

async fn fetches(addr: SocketAddr, outcome: &str) -> u64 {
    let metrics = get(addr, "/metrics").await.body;
    let prefix = format!("pushwire_jwks_fetches_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// Long enough for the next unknown `kid` to be allowed a fetch.
async fn wait_for_on_demand_interval() {
    tokio::time::sleep(ON_DEMAND_INTERVAL + Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_token_with_the_sets_kid_verifies_for_both_roles() {
    let keys = KeyServer::start(&[oct("k1", OLD_SECRET)]).await;
    let mut config = config();
    config.jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();
    // One URL for both roles: one fetch at start.
    assert_eq!(keys.requests(), 1);

    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        200
    );
    assert_eq!(
        publish_with(addr, &publisher(Some("k1"), OLD_SECRET), "a").await,
        200
    );
    // A token without `kid` is tried with every key of the set.
    assert_eq!(
        publish_with(addr, &publisher(None, OLD_SECRET), "b").await,
        200
    );
    // The right id with the wrong secret, and a publisher with no token.
    assert_eq!(
        stream_status(addr, &subscriber("k1", NEW_SECRET)).await,
        401
    );
    assert_eq!(publish_with(addr, "not.a.token", "c").await, 401);
    assert_eq!(fetches(addr, "ok").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn keys_rotate_while_a_stream_stays_open() {
    let keys = KeyServer::start(&[oct("k1", OLD_SECRET)]).await;
    let mut config = config();
    config.subscriber_jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();
    let old = subscriber("k1", OLD_SECRET);
    let new = subscriber("k2", NEW_SECRET);

    let bearer = format!("Bearer {old}");
    let mut open = SseClient::connect_with(
        addr,
        "/api/v1/stream?topic=news",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(open.status, 200);

    // The issuer adds a key: tokens naming it work on their first use.
    keys.serve(&[oct("k1", OLD_SECRET), oct("k2", NEW_SECRET)]);
    assert_eq!(stream_status(addr, &new).await, 200);
    assert_eq!(keys.requests(), 2);
    assert_eq!(stream_status(addr, &old).await, 200);
    assert_eq!(keys.requests(), 2, "a known kid fetches nothing");

    // Then drops the old one: once the set has been fetched again, the
    // old tokens are refused.
    keys.serve(&[oct("k2", NEW_SECRET)]);
    wait_for_on_demand_interval().await;
    assert_eq!(
        stream_status(addr, &subscriber("k3", NEW_SECRET)).await,
        401
    );
    assert_eq!(keys.requests(), 3);
    assert_eq!(stream_status(addr, &old).await, 401);
    assert_eq!(stream_status(addr, &new).await, 200);

    // The stream opened with the old key is not cut.
    publish(
        addr,
        json!({"to": {"topics": ["news"]}, "data": "still here"}),
    )
    .await;
    let event = open.next().await;
    assert_eq!(event.data, "still here");
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_unknown_kids_fetches_the_set_at_most_once_more() {
    let keys = KeyServer::start(&[oct("k1", OLD_SECRET)]).await;
    let mut config = config();
    config.subscriber_jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();

    let forged: Vec<_> = (0..50)
        .map(|_| {
            let kid = uuid::Uuid::new_v4().to_string();
            tokio::spawn(async move { stream_status(addr, &subscriber(&kid, OLD_SECRET)).await })
        })
        .collect();
    for answer in forged {
        assert_eq!(answer.await.unwrap(), 401);
    }
    assert!(
        keys.requests() <= 2,
        "{} fetches for 50 unknown kids",
        keys.requests()
    );
    // And a real token is still served from the set.
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        200
    );
    assert!(keys.requests() <= 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_failing_key_server_leaves_the_last_good_set() {
    let keys = KeyServer::start(&[oct("k1", OLD_SECRET)]).await;
    let mut config = config();
    config.subscriber_jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();

    keys.fail();
    // An unknown kid makes the hub ask; the 500 changes nothing.
    assert_eq!(
        stream_status(addr, &subscriber("k2", NEW_SECRET)).await,
        401
    );
    assert_eq!(keys.requests(), 2);
    assert_eq!(fetches(addr, "http_error").await, 1);
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_hub_whose_first_fetch_fails_starts_and_refuses_until_a_fetch_succeeds() {
    // Nothing listens on a port just released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = config();
    config.subscriber_jwks_url = Some(format!("http://{closed}/jwks"));
    let server = start(config).await;
    let addr = server.addr();
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        401
    );
    assert!(fetches(addr, "unreachable").await >= 1);
    // Anonymous subscribers are still served.
    assert_eq!(
        SseClient::connect(addr, "/api/v1/stream?topic=news")
            .await
            .status,
        200
    );
    server.shutdown().await;

    // A server that answers 500 at first, then the set.
    let keys = KeyServer::start(&[]).await;
    keys.fail();
    let mut config = pushwire_testkit::config();
    config.subscriber_jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        401
    );
    keys.serve(&[oct("k1", OLD_SECRET)]);
    wait_for_on_demand_interval().await;
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_file_set_is_read_again_for_an_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, set(&[oct("k1", OLD_SECRET)])).unwrap();
    let mut config = config();
    config.subscriber_jwks_url = Some(format!("file://{}", path.display()));
    let server = start(config).await;
    let addr = server.addr();
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        200
    );
    std::fs::write(&path, set(&[oct("k2", NEW_SECRET)])).unwrap();
    assert_eq!(
        stream_status(addr, &subscriber("k2", NEW_SECRET)).await,
        200
    );
    assert_eq!(
        stream_status(addr, &subscriber("k1", OLD_SECRET)).await,
        401
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_jwk_for_another_algorithm_is_never_used() {
    let mut hs512 = oct("k1", OLD_SECRET);
    hs512["alg"] = json!("HS512");
    let mut encryption = oct("k2", OLD_SECRET);
    encryption["use"] = json!("enc");
    let keys = KeyServer::start(&[hs512, encryption]).await;
    let mut config = config();
    config.subscriber_jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();
    for kid in ["k1", "k2"] {
        assert_eq!(stream_status(addr, &subscriber(kid, OLD_SECRET)).await, 401);
    }
    // Nor without a kid.
    let kidless = token(None, OLD_SECRET, json!({"sub": "reader"}));
    assert_eq!(stream_status(addr, &kidless).await, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn an_rsa_jwk_verifies_rs256_only() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    let mut rsa: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{fixtures}/rsa.pub.jwk.json")).unwrap(),
    )
    .unwrap();
    rsa["kid"] = json!("rsa-1");
    let keys = KeyServer::start(std::slice::from_ref(&rsa)).await;
    let mut config = config();
    config.jwt_alg = "RS256".into();
    config.subscriber_jwks_url = Some(keys.url());
    let server = start(config).await;
    let addr = server.addr();
    let claims = json!({"sub": "reader", "mercure": {"subscribe": ["*"]}});

    let private =
        EncodingKey::from_rsa_pem(&std::fs::read(format!("{fixtures}/rsa.pem")).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let good = jsonwebtoken::encode(&header, &claims, &private).unwrap();
    assert_eq!(stream_status(addr, &good).await, 200);

    // HS256 keyed with the JWK's public modulus.
    let modulus = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&modulus)).unwrap();
    assert_eq!(stream_status(addr, &confused).await, 401);

    // Unsigned.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_eq!(stream_status(addr, &none).await, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn two_static_publisher_keys_both_verify() {
    let mut config = config();
    config.publisher_jwt_key = vec![OLD_SECRET.into(), NEW_SECRET.into()];
    let server = start(config).await;
    let addr = server.addr();
    assert_eq!(
        publish_with(addr, &publisher(None, OLD_SECRET), "a").await,
        200
    );
    assert_eq!(
        publish_with(addr, &publisher(None, NEW_SECRET), "b").await,
        200
    );
    let stranger = publisher(None, "a third secret, thirty-two bytes or more");
    assert_eq!(publish_with(addr, &stranger, "c").await, 401);
    server.shutdown().await;
}

#[test]
fn plain_http_to_a_remote_key_server_is_refused_at_start() {
    for option in [
        "--jwks-url",
        "--publisher-jwks-url",
        "--subscriber-jwks-url",
    ] {
        for command in ["serve", "check-config"] {
            let out = Command::new(BIN)
                .args([command, option, "http://keys.example.com/jwks.json"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
            assert!(stderr.contains(&option[2..]), "{option}: {stderr}");
            assert!(stderr.contains("loopback"), "{option}: {stderr}");
        }
    }
}

#[test]
fn the_environment_variable_holds_one_key_and_check_config_hides_them_all() {
    let out = Command::new(BIN)
        .env(
            "PUSHWIRE_PUBLISHER_JWT_KEY",
            "env-secret, with a comma, of 32 bytes",
        )
        .args([
            "check-config",
            "--subscriber-jwt-key",
            "flag-secret-one-of-thirty-two-bytes",
            "--subscriber-jwt-key",
            "flag-secret-two-of-thirty-two-bytes",
            "--jwks-url",
            "https://issuer.example.com/jwks.json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("secret"), "{stdout}");
    assert!(
        stdout.contains(r#"publisher-jwt-key = ["<redacted>"]"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"subscriber-jwt-key = ["<redacted>", "<redacted>"]"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"jwks-url = "https://issuer.example.com/jwks.json""#),
        "{stdout}"
    );
}

#[test]
fn a_key_server_that_cannot_be_reached_at_start_is_logged_by_its_url() {
    use std::io::{BufRead, BufReader};
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}/keys/jwks.json");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--storage", "memory", "--subscriber-jwks-url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let (mut logged, mut listening) = (false, false);
    let deadline = std::time::Instant::now() + WAIT;
    while !(logged && listening) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = received.recv_timeout(left) else {
            break;
        };
        let log: Value = serde_json::from_str(&line).unwrap_or_default();
        if log["level"] == "ERROR" && log["fields"]["url"] == url.as_str() {
            logged = true;
        }
        listening |= log["fields"]["addr"].is_string();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(logged, "no error naming {url}");
    assert!(listening, "the hub did not start");
}

/// The Mercure routes find a just-added key on its first use too: a
/// subscriber's stream, a publish and the subscriptions API.
#[tokio::test]
async fn a_new_kid_works_at_once_on_the_mercure_routes() {
    let keys = KeyServer::start(&[oct("k1", OLD_SECRET)]).await;
    let mut config = config();
    config.jwks_url = Some(keys.url());
    config.subscriptions = true;
    let server = start(config).await;
    let addr = server.addr();
    keys.serve(&[oct("k1", OLD_SECRET), oct("k2", NEW_SECRET)]);

    let bearer = format!("Bearer {}", subscriber("k2", NEW_SECRET));
    let stream = SseClient::connect_with(
        addr,
        "/.well-known/mercure?topic=news",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(stream.status, 200);

    keys.serve(&[
        oct("k1", OLD_SECRET),
        oct("k2", NEW_SECRET),
        oct("k3", NEW_SECRET),
    ]);
    wait_for_on_demand_interval().await;
    let bearer = format!("Bearer {}", publisher(Some("k3"), NEW_SECRET));
    let reply = request(
        addr,
        "POST",
        "/.well-known/mercure",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &bearer),
        ],
        b"topic=news&data=x",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.shutdown().await;
}
