//! HTTPS with HTTP/2 and HTTP/1.1 by ALPN, certificate reload, and
//! cleartext HTTP/2 (h2c) with prior knowledge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use pushwire::config::ServeConfig;
use pushwire_client::sse::{ParsedEvent, Parser};
use pushwire_testkit::prelude::{config, HubProcess, WAIT};

/// The hub binary under test.
const BIN: &str = pushwire_testkit::hub_binary!();

// ---------------------------------------------------------------------------
// Certificates

/// A self-signed certificate for `localhost` and 127.0.0.1, with its key.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn make_cert(common_name: &str) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// The two files the hub is started with, in a temporary directory.
struct CertFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn new(first: &TestCert) -> CertFiles {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: dir,
        };
        files.install(first);
        files
    }

    fn install(&self, cert: &TestCert) {
        std::fs::write(&self.cert, &cert.cert_pem).unwrap();
        std::fs::write(&self.key, &cert.key_pem).unwrap();
    }
}

fn tls_config(files: &CertFiles) -> ServeConfig {
    let mut c = config();
    c.tls_cert = Some(files.cert.clone());
    c.tls_key = Some(files.key.clone());
    c
}

// ---------------------------------------------------------------------------
// Clients

/// A client configuration that trusts exactly these certificates and offers
/// these ALPN protocols.
fn client_tls(trusted: &[&TestCert], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// The certificate the server presented on this connection.
fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

type Body = Full<Bytes>;

/// An HTTP/2 connection (TLS or prior-knowledge cleartext).
async fn h2_client<T>(io: T) -> http2::SendRequest<Body>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    send
}

async fn h1_client<T>(io: T) -> http1::SendRequest<Body>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(connection);
    send
}

/// Something that sends one request on a connection it keeps.
trait Sender {
    async fn send(&mut self, request: Request<Body>) -> hyper::Result<hyper::Response<Incoming>>;
}

impl Sender for http2::SendRequest<Body> {
    async fn send(&mut self, request: Request<Body>) -> hyper::Result<hyper::Response<Incoming>> {
        self.send_request(request).await
    }
}

impl Sender for http1::SendRequest<Body> {
    async fn send(&mut self, request: Request<Body>) -> hyper::Result<hyper::Response<Incoming>> {
        self.ready().await?;
        self.send_request(request).await
    }
}

fn get_request(base: &str, path: &str) -> Request<Body> {
    Request::get(format!("{base}{path}"))
        .header(header::HOST, "localhost")
        .body(Body::default())
        .unwrap()
}

async fn read_all(response: hyper::Response<Incoming>) -> String {
    let body = timeout(WAIT, response.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

async fn get_json(client: &mut impl Sender, base: &str, path: &str) -> Value {
    let response = client.send(get_request(base, path)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_str(&read_all(response).await).unwrap()
}

async fn publish(client: &mut impl Sender, base: &str, body: Value) -> String {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/api/v1/publish"))
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status();
    let text = read_all(response).await;
    assert_eq!(status, StatusCode::OK, "publish failed: {text}");
    serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn stream_count(client: &mut impl Sender, base: &str) -> u64 {
    get_json(client, base, "/api/v1/stats").await["streams"]
        .as_u64()
        .unwrap()
}

/// One SSE response body, parsed as a browser would.
struct Events {
    version: Version,
    body: Incoming,
    parser: Parser,
    pending: VecDeque<ParsedEvent>,
}

impl Events {
    async fn open(client: &mut impl Sender, base: &str, path: &str) -> Events {
        let response = client.send(get_request(base, path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream; charset=utf-8"
        );
        Events {
            version: response.version(),
            body: response.into_body(),
            parser: Parser::default(),
            pending: VecDeque::new(),
        }
    }

    /// The next event; `None` when the stream ends.
    async fn next(&mut self) -> Option<ParsedEvent> {
        let deadline = Instant::now() + WAIT;
        while self.pending.is_empty() {
            let frame = timeout(deadline - Instant::now(), self.body.frame())
                .await
                .expect("an event in time");
            match frame {
                None | Some(Err(_)) => return None,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend(self.parser.feed(&data));
                    }
                }
            }
        }
        self.pending.pop_front()
    }

    async fn expect(&mut self, data: &str) {
        let event = self.next().await.expect("the stream ended");
        assert_eq!(event.data, data);
    }
}

const TLS_BASE: &str = "https://localhost";

// ---------------------------------------------------------------------------
// HTTPS

#[tokio::test(flavor = "multi_thread")]
async fn h2_over_tls_carries_twenty_streams_on_one_connection() {
    let cert = make_cert("pushwire test");
    let files = CertFiles::new(&cert);
    let server = pushwire_testkit::start(tls_config(&files)).await;
    let tls = connect_tls(server.addr(), client_tls(&[&cert], &[b"h2", b"http/1.1"])).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    assert_eq!(peer_cert(&tls), cert.der);
    let mut client = h2_client(tls).await;

    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(Events::open(&mut client, TLS_BASE, "/api/v1/stream?topic=t").await);
    }
    assert!(streams.iter().all(|s| s.version == Version::HTTP_2));
    // All twenty are open at once, on the one connection this client has.
    assert_eq!(stream_count(&mut client, TLS_BASE).await, 20);

    let id = publish(
        &mut client,
        TLS_BASE,
        json!({"to": {"topics": ["t"]}, "data": "over h2"}),
    )
    .await;
    for stream in &mut streams {
        let event = stream.next().await.expect("an event");
        assert_eq!(event.data, "over h2");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http11_over_tls_with_or_without_alpn() {
    let cert = make_cert("pushwire test");
    let files = CertFiles::new(&cert);
    let server = pushwire_testkit::start(tls_config(&files)).await;
    let addr = server.addr();

    let tls = connect_tls(addr, client_tls(&[&cert], &[b"http/1.1"])).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let mut subscriber = h1_client(tls).await;
    let mut stream = Events::open(&mut subscriber, TLS_BASE, "/api/v1/stream?topic=t").await;
    assert_eq!(stream.version, Version::HTTP_11);

    // A client that offers no ALPN at all gets HTTP/1.1 too.
    let tls = connect_tls(addr, client_tls(&[&cert], &[])).await;
    assert_eq!(alpn(&tls), None);
    let mut publisher = h1_client(tls).await;
    publish(
        &mut publisher,
        TLS_BASE,
        json!({"to": {"topics": ["t"]}, "data": "over http/1.1"}),
    )
    .await;
    stream.expect("over http/1.1").await;
    server.shutdown().await;
}

/// Reads from a raw TLS connection until `want` has arrived (or fails the
/// test); returns everything read.
async fn read_until(tls: &mut TlsStream<TcpStream>, got: &mut Vec<u8>, want: &str) {
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(got).contains(want) {
        let mut buf = [0u8; 4096];
        let n = timeout(deadline - Instant::now(), tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(got)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {want:?}: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// Over TLS with HTTP/1.1 a stream is written by the hub's own stream
/// writer, as over plain HTTP/1.1: a head sent a byte per TLS record opens
/// it, a client closing its end is seen at once, a head with bare line
/// feeds is refused, another request first goes to hyper and keeps the
/// connection alive, and shutdown ends the stream with its last chunk.
#[tokio::test(flavor = "multi_thread")]
async fn http11_streams_over_tls_take_the_stream_writer() {
    let cert = make_cert("pushwire test");
    let files = CertFiles::new(&cert);
    let server = pushwire_testkit::start(tls_config(&files)).await;
    let addr = server.addr();
    let h1 = client_tls(&[&cert], &[b"http/1.1"]);
    let mut api = h2_client(connect_tls(addr, client_tls(&[&cert], &[b"h2"])).await).await;

    // The head a byte per record.
    let mut tls = connect_tls(addr, h1.clone()).await;
    for byte in b"GET /api/v1/stream?topic=t HTTP/1.1\r\nHost: localhost\r\n\r\n" {
        tls.write_all(&[*byte]).await.unwrap();
        tls.flush().await.unwrap();
    }
    let mut got = Vec::new();
    read_until(&mut tls, &mut got, "\r\n\r\n").await;
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    publish(
        &mut api,
        TLS_BASE,
        json!({"to": {"topics": ["t"]}, "data": "one"}),
    )
    .await;
    read_until(&mut tls, &mut got, "data: one\n\n").await;

    // Closed by the client: the hub sees it without writing to it.
    assert_eq!(stream_count(&mut api, TLS_BASE).await, 1);
    drop(tls);
    let deadline = Instant::now() + WAIT;
    while stream_count(&mut api, TLS_BASE).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the closed stream is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Bare line feeds: refused, no stream.
    let mut tls = connect_tls(addr, h1.clone()).await;
    tls.write_all(b"GET /api/v1/stream?topic=t HTTP/1.1\nHost: localhost\n\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = timeout(WAIT, tls.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "{answer}");
    assert_eq!(stream_count(&mut api, TLS_BASE).await, 0);

    // Another request first: hyper answers it and the connection goes on.
    let mut tls = connect_tls(addr, h1).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut tls, &mut got, "ok\n").await;
    tls.write_all(b"GET /api/v1/stream?topic=t HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut tls, &mut got, "text/event-stream").await;
    publish(
        &mut api,
        TLS_BASE,
        json!({"to": {"topics": ["t"]}, "data": "two"}),
    )
    .await;
    read_until(&mut tls, &mut got, "data: two\n\n").await;

    // Shutdown ends the stream.
    let stopping = tokio::spawn(server.shutdown());
    let mut rest = Vec::new();
    let _ = timeout(WAIT, tls.read_to_end(&mut rest))
        .await
        .expect("the stream ends");
    timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_text_and_silent_clients_on_the_tls_port_are_dropped_cleanly() {
    let cert = make_cert("pushwire test");
    let files = CertFiles::new(&cert);
    let mut config = tls_config(&files);
    config.header_read_timeout = Duration::from_secs(3);
    let server = pushwire_testkit::start(config).await;
    let addr = server.addr();

    // A client that connects and never starts the handshake does not hold
    // up anyone else, and is dropped after the header read timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();

    // Plain HTTP to the TLS port: no HTTP answer, the connection just ends.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("the hub ends the connection");
    assert!(read.is_ok() || answer.is_empty());
    assert!(
        !answer.starts_with(b"HTTP/"),
        "an HTTP answer on the TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // The hub goes on serving TLS clients while the silent one waits.
    let tls = connect_tls(addr, client_tls(&[&cert], &[b"h2"])).await;
    let mut client = h2_client(tls).await;
    let health = client
        .send(get_request(TLS_BASE, "/healthz"))
        .await
        .unwrap();
    assert_eq!(read_all(health).await, "ok\n");
    // Served at once, while the silent connection's handshake is still
    // pending: handshakes run in the connections' tasks, not in the accept
    // loop.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "another client waited for the silent one: {:?}",
        started.elapsed()
    );
    let mut byte = [0u8; 1];
    assert!(
        matches!(silent.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent connection was closed before another client was served"
    );

    let n = timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("the silent connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(started.elapsed() >= Duration::from_millis(2900));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_serves_the_new_certificate_to_new_connections_and_keeps_open_streams() {
    let first = make_cert("pushwire first");
    let second = make_cert("pushwire second");
    let files = CertFiles::new(&first);
    let server = pushwire_testkit::start(tls_config(&files)).await;
    let addr = server.addr();
    let trust = client_tls(&[&first, &second], &[b"h2"]);

    let before = connect_tls(addr, trust.clone()).await;
    assert_eq!(peer_cert(&before), first.der);
    let mut old_client = h2_client(before).await;
    let mut old_stream = Events::open(&mut old_client, TLS_BASE, "/api/v1/stream?topic=t").await;

    files.install(&second);
    server.reload_tls().expect("the new files load");

    let after = connect_tls(addr, trust.clone()).await;
    assert_eq!(peer_cert(&after), second.der);
    let mut new_client = h2_client(after).await;
    let to_t = |data: &str| json!({"to": {"topics": ["t"]}, "data": data});
    publish(&mut new_client, TLS_BASE, to_t("after reload")).await;
    old_stream.expect("after reload").await;

    // A broken certificate file: the reload fails and changes nothing.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let error = server
        .reload_tls()
        .expect_err("a broken file must not load");
    assert!(error.to_string().contains("cert.pem"), "{error}");
    // A key that does not belong to the certificate: the same.
    std::fs::write(&files.cert, &first.cert_pem).unwrap();
    std::fs::write(&files.key, &second.key_pem).unwrap();
    assert!(server.reload_tls().is_err(), "a mismatched key loaded");
    // A missing key file: the same.
    std::fs::remove_file(&files.key).unwrap();
    assert!(server.reload_tls().is_err(), "a missing key loaded");

    let still = connect_tls(addr, trust).await;
    assert_eq!(peer_cert(&still), second.der);
    let mut client = h2_client(still).await;
    publish(&mut client, TLS_BASE, to_t("after a failed reload")).await;
    old_stream.expect("after a failed reload").await;
    assert_eq!(stream_count(&mut client, TLS_BASE).await, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_http2_streams_over_tls() {
    let cert = make_cert("pushwire test");
    let files = CertFiles::new(&cert);
    let server = pushwire_testkit::start(tls_config(&files)).await;
    let addr = server.addr();
    let tls = connect_tls(addr, client_tls(&[&cert], &[b"h2"])).await;
    let mut client = h2_client(tls).await;
    let mut a = Events::open(&mut client, TLS_BASE, "/api/v1/stream?topic=a").await;
    let mut b = Events::open(&mut client, TLS_BASE, "/api/v1/stream?topic=b").await;
    let stopping = tokio::spawn(server.shutdown());
    assert!(a.next().await.is_none(), "stream a outlived shutdown");
    assert!(b.next().await.is_none(), "stream b outlived shutdown");
    timeout(WAIT, stopping).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

// ---------------------------------------------------------------------------
// The binary: configuration errors and SIGHUP

fn spawn_hub(cert: &Path, key: &Path) -> HubProcess {
    HubProcess::spawn(
        BIN,
        [
            "--storage".as_ref(),
            "memory".as_ref(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let first = make_cert("pushwire first");
    let second = make_cert("pushwire second");
    let files = CertFiles::new(&first);
    let mut hub = spawn_hub(&files.cert, &files.key);
    let trust = client_tls(&[&first, &second], &[b"h2"]);
    let addr = hub.addr;
    assert_eq!(
        peer_cert(&connect_tls(addr, trust.clone()).await),
        first.der
    );

    files.install(&second);
    hub.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while peer_cert(&connect_tls(addr, trust.clone()).await) != second.der {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file on SIGHUP: the hub keeps running with the last good one.
    std::fs::write(&files.key, "not a key").unwrap();
    hub.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hub.child.try_wait().unwrap().is_none(), "the hub exited");
    assert_eq!(peer_cert(&connect_tls(addr, trust).await), second.der);
}

#[test]
fn tls_configuration_errors_exit_with_code_2_and_name_the_option() {
    let cert = make_cert("pushwire test");
    let files = CertFiles::new(&cert);
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN)
            .arg("check-config")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert_flag = std::ffi::OsStr::new("--tls-cert");
    let key_flag = std::ffi::OsStr::new("--tls-key");
    let missing = files.cert.with_file_name("missing.pem");

    let (code, err) = run(&[cert_flag, files.cert.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tls-key"), "{err}");

    let (code, err) = run(&[key_flag, files.key.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tls-cert"), "{err}");

    let (code, err) = run(&[
        cert_flag,
        missing.as_os_str(),
        key_flag,
        files.key.as_os_str(),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("tls-cert") && err.contains("missing.pem"),
        "{err}"
    );

    // The key where the certificate should be.
    let (code, err) = run(&[
        cert_flag,
        files.key.as_os_str(),
        key_flag,
        files.key.as_os_str(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no certificate"), "{err}");

    let (code, err) = run(&[
        cert_flag,
        files.cert.as_os_str(),
        key_flag,
        files.key.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
}

// ---------------------------------------------------------------------------
// h2c

#[tokio::test(flavor = "multi_thread")]
async fn h2c_serves_http2_with_prior_knowledge_and_http11_on_the_same_port() {
    let mut config = config();
    config.h2c = true;
    let server = pushwire_testkit::start(config).await;
    let addr = server.addr();
    let base = format!("http://{addr}");

    let mut client = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(Events::open(&mut client, &base, "/api/v1/stream?topic=t").await);
    }
    assert!(streams.iter().all(|s| s.version == Version::HTTP_2));

    // HTTP/1.1 on the same port, with the usual raw client.
    let mut tab = pushwire_testkit::SseClient::connect(addr, "/api/v1/stream?topic=t").await;
    assert_eq!(tab.status, 200);
    assert_eq!(stream_count(&mut client, &base).await, 11);

    pushwire_testkit::publish(addr, json!({"to": {"topics": ["t"]}, "data": "one"})).await;
    publish(
        &mut client,
        &base,
        json!({"to": {"topics": ["t"]}, "data": "two"}),
    )
    .await;
    for stream in &mut streams {
        stream.expect("one").await;
        stream.expect("two").await;
    }
    assert_eq!(tab.next().await.data, "one");
    assert_eq!(tab.next().await.data, "two");

    // Shutdown ends both kinds of stream.
    let stopping = tokio::spawn(server.shutdown());
    for stream in &mut streams {
        assert!(
            stream.next().await.is_none(),
            "an h2c stream outlived shutdown"
        );
    }
    assert!(
        tab.wait_end(WAIT).await,
        "the HTTP/1.1 stream outlived shutdown"
    );
    timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_drops_a_silent_connection_after_the_header_read_timeout() {
    let mut config = config();
    config.h2c = true;
    config.header_read_timeout = Duration::from_millis(300);
    let server = pushwire_testkit::start(config).await;
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let n = timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("the silent connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(
        pushwire_testkit::get(server.addr(), "/healthz").await.body,
        "ok\n",
        "the hub stopped serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_h2c_the_http2_preface_is_refused_and_the_hub_goes_on() {
    let server = pushwire_testkit::start(config()).await;
    let addr = server.addr();
    let base = format!("http://{addr}");

    // What an HTTP/2 prior-knowledge client sends first, on the wire.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = timeout(WAIT, raw.read_to_end(&mut answer))
        .await
        .expect("the hub ends the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "unexpected answer: {answer:?}"
    );

    // And with a real HTTP/2 client: no response.
    let mut client = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    let response = timeout(WAIT, client.send(get_request(&base, "/healthz")))
        .await
        .expect("the request fails in time");
    assert!(response.is_err(), "an HTTP/2 response without --h2c");

    assert_eq!(pushwire_testkit::get(addr, "/healthz").await.body, "ok\n");
    let tab = pushwire_testkit::SseClient::connect(addr, "/api/v1/stream?topic=x").await;
    assert_eq!(tab.status, 200);
    server.shutdown().await;
}

#[test]
fn h2c_can_be_turned_on_by_flag_environment_or_file() {
    let shown = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(BIN);
        command.arg("check-config").args(args);
        command.env_remove("PUSHWIRE_H2C");
        if let Some(value) = env {
            command.env("PUSHWIRE_H2C", value);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        table["h2c"].as_bool().unwrap()
    };
    assert!(!shown(&[], None));
    assert!(shown(&["--h2c"], None));
    assert!(shown(&[], Some("true")));
    assert!(shown(&[], Some("1")));
    assert!(!shown(&[], Some("false")));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushwire.toml");
    std::fs::write(&file, "h2c = true\n").unwrap();
    assert!(shown(&["--config", file.to_str().unwrap()], None));
}
