//! End-to-end tests in headless Chromium: the demo page served at `/`, and
//! the seed service's own page, unchanged, against a hub on port 8080.
//!
//! They need Chromium installed and fail (not skip) without it.

#[path = "browser/cdp.rs"]
mod cdp;
use std::io::ErrorKind;
use std::path::Path;

use serde_json::{json, Value};
use tokio::time::{sleep, Duration, Instant};

use cdp::{js, screenshot_path, Browser, Page, Result, DEADLINE};
use pushwire::server::{Server, ServerError};

/// Waits for a `.msg` of this event type whose data, as rendered, is `data`;
/// returns its event id as shown.
async fn wait_for_message(page: &Page<'_>, event: &str, data: &str) -> Result<String> {
    let found = page
        .wait_for(
            &format!("a `{event}` message with data {data:?} is shown"),
            &format!(
                "(() => {{
                   for (const m of document.querySelectorAll('#messages .msg')) {{
                     const d = m.querySelector('.data'), t = m.querySelector('.type');
                     // innerText follows the CSS: blank lines survive only with pre-wrap.
                     if (t && d && t.textContent === {} && d.innerText === {})
                       return m.querySelector('.id')?.textContent ?? '';
                   }}
                   return null;
                 }})()",
                js(event),
                js(data)
            ),
        )
        .await?;
    Ok(found.as_str().unwrap_or_default().to_owned())
}

/// A hub with in-memory history (so that hubs running at once share no files).
async fn start_hub(listen: &str) -> Result<Server> {
    let mut config = pushwire_testkit::config();
    config.listen = listen.parse()?;
    Ok(pushwire::server::start(config).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_page_receives_a_pushed_message() -> Result<()> {
    let server = start_hub("127.0.0.1:0").await?;
    let addr = server.addr();
    let browser = Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.set_viewport(1280, 1100).await?;
    page.navigate(&format!("http://{addr}/")).await?;

    // Prefilled with a random id.
    let prefilled = page.eval("document.querySelector('#user').value").await?;
    assert!(
        prefilled.as_str().is_some_and(|v| v.starts_with("user-")),
        "user id not prefilled: {prefilled}"
    );
    assert_eq!(page.text_of("#state").await?, "closed");

    page.fill("#user", "browser-1").await?;
    page.click("#connect").await?;
    page.wait_for(
        "the stream is open",
        "document.querySelector('#state').textContent === 'open'",
    )
    .await?;

    // Pushed from outside, to this user: the blank line must survive.
    let sent = "hello\n\nbrowser";
    let id = pushwire_testkit::publish(
        addr,
        json!({ "to": { "users": ["browser-1"] }, "data": sent }),
    )
    .await;
    let shown = wait_for_message(&page, "message", sent).await?;
    assert_eq!(shown, format!("id {id}"));
    // Data is text, never markup.
    let markup = "<b>not bold</b>";
    pushwire_testkit::publish(
        addr,
        json!({ "to": { "users": ["browser-1"] }, "data": markup }),
    )
    .await;
    wait_for_message(&page, "message", markup).await?;
    assert_eq!(
        page.eval("document.querySelectorAll('#messages b').length")
            .await?,
        json!(0)
    );

    page.wait_for(
        "the online count shows at least 1",
        "Number(document.querySelector('#count').textContent) >= 1",
    )
    .await?;
    page.wait_for(
        "the online ids list browser-1",
        "[...document.querySelectorAll('#ids li')].some(li => li.textContent === 'browser-1')",
    )
    .await?;

    // A hub error is shown with its message.
    page.fill("#target-kind", "user").await?;
    page.fill("#target", &"x".repeat(300)).await?;
    page.fill("#data", "too long a user id").await?;
    page.click("#send").await?;
    let error = page
        .wait_for(
            "the send error is shown",
            "document.querySelector('#send-result.err')?.textContent || null",
        )
        .await?;
    assert!(
        error.as_str().is_some_and(|e| e.contains("invalid_field")),
        "unexpected error text: {error}"
    );

    // Through the page's own form, to everyone, as a named event.
    page.fill("#target", "").await?;
    page.fill("#target-kind", "all").await?;
    assert_eq!(
        page.eval("document.querySelector('#target').disabled")
            .await?,
        json!(true)
    );
    page.fill("#event", "note").await?;
    page.fill("#data", "to everyone\nfrom the form").await?;
    page.click("#send").await?;
    page.wait_for(
        "the send result shows the event id",
        "document.querySelector('#send-result.ok')?.textContent.startsWith('Sent, event id')",
    )
    .await?;
    wait_for_message(&page, "note", "to everyone\nfrom the form").await?;

    // Closing this user's streams: the browser reconnects by itself.
    page.click("#close-user").await?;
    page.wait_for(
        "the close result is shown",
        "document.querySelector('#connect-result').textContent.startsWith('Closed 1 stream')",
    )
    .await?;
    page.wait_for(
        "the stream reconnects",
        "document.querySelector('#connect-result').textContent.startsWith('Reconnected') && \
         document.querySelector('#state').textContent === 'open' && \
         document.querySelector('#count').textContent === '1'",
    )
    .await?;
    // It resumed after the last event id: nothing was delivered twice.
    assert_eq!(
        page.eval("document.querySelectorAll('#messages .msg').length")
            .await?,
        json!(3)
    );

    page.screenshot(&screenshot_path("demo-page.png")).await?;

    page.click("#disconnect").await?;
    let deadline = Instant::now() + DEADLINE;
    while server.hub().user_count() != 0 {
        assert!(
            Instant::now() < deadline,
            "the hub still counts the closed stream"
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(page.text_of("#state").await?, "closed");

    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_page_works_unchanged() -> Result<()> {
    // The seed page hard-codes http://localhost:8080.
    let server = match start_hub("127.0.0.1:8080").await {
        Ok(server) => server,
        Err(e) => {
            let taken = matches!(
                e.downcast_ref::<ServerError>(),
                Some(ServerError::Bind { source, .. }) if source.kind() == ErrorKind::AddrInUse
            );
            if taken {
                return Err("port 8080 on 127.0.0.1 is taken: the seed page hard-codes \
                            http://localhost:8080, so this test needs that port; stop whatever \
                            listens there and run the test again"
                    .into());
            }
            return Err(e);
        }
    };
    let addr = server.addr();
    // Chromium resolves `localhost` to ::1 first and falls back to 127.0.0.1
    // only when ::1 refuses: anything listening on [::1]:8080 would get the
    // page's requests instead of this hub.
    let v6 = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect("[::1]:8080"),
    )
    .await;
    if matches!(v6, Ok(Ok(_))) {
        return Err(
            "something listens on [::1]:8080: Chromium tries ::1 first for \
                    `localhost`, so the seed page would talk to it instead of the hub on \
                    127.0.0.1:8080; stop it and run the test again"
                .into(),
        );
    }

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-page.html");
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("seed-page.html");
    std::fs::copy(&fixture, &copy)?;

    let browser = Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.navigate(&format!("file://{}", copy.display())).await?;

    // The page's user id is a timestamp: broadcast until it shows.
    let text = "seed-hello";
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply =
            pushwire_testkit::get(addr, &format!("/sse/batchSendMessage?message={text}")).await;
        assert_eq!(reply.status, 200, "batchSendMessage failed: {}", reply.body);
        if page.text_of("#message").await?.contains(text) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the seed page did not show a broadcast within {DEADLINE:?}; it shows {:?}; \
                 page log:\n{}",
                page.text_of("#message").await?,
                cdp.log()
            )
            .into());
        }
        sleep(Duration::from_millis(200)).await;
    }
    let shown = page.text_of("#message").await?;
    assert!(shown.contains("连接用户="), "page text: {shown:?}");
    assert!(
        shown.contains("建立连接"),
        "open was not reported: {shown:?}"
    );
    assert_eq!(pushwire_testkit::user_count(addr).await, 1);
    let ids = pushwire_testkit::get(addr, "/sse/getIds").await.json();
    let page_user = page.eval("String(userId)").await?;
    assert_eq!(ids, json!([page_user]));

    // Its close button closes the stream and tells the hub.
    page.eval("document.querySelector('button').click()")
        .await?;
    let deadline = Instant::now() + DEADLINE;
    while pushwire_testkit::user_count(addr).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the seed page's close did not reach the hub"
        );
        sleep(Duration::from_millis(50)).await;
    }

    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}

/// One HTTPS request from the test (HTTP/1.1), trusting only `cert`.
async fn https_request(
    addr: std::net::SocketAddr,
    cert: &rustls::pki_types::CertificateDer<'static>,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, Value)> {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(DEADLINE, send.send_request(request)).await??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body)?))
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_event_sources_over_https_http2_all_receive() -> Result<()> {
    // A self-signed certificate; Chromium is told to accept it.
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem())?;
    std::fs::write(&key, generated.signing_key.serialize_pem())?;
    let mut config = pushwire_testkit::config();
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let server = pushwire::server::start(config).await?;
    let addr = server.addr();
    let der = generated.cert.der().clone();
    let api = |method: &str, path: &str, body: String| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
    };

    let browser = Browser::launch_with(&["--ignore-certificate-errors"]).await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.navigate(&format!("https://127.0.0.1:{}/", addr.port()))
        .await?;

    // Ten EventSources in one page: over HTTP/1.1 the browser would open
    // six connections to this host and leave four sources waiting.
    page.eval(
        "window.sources = []; window.received = [];
         for (let i = 0; i < 10; i++) {
           const source = new EventSource('/api/v1/stream?topic=t');
           window.received.push([]);
           source.onmessage = (e) => window.received[i].push(e.data);
           window.sources.push(source);
         }
         true",
    )
    .await?;
    page.wait_for(
        "all ten EventSources are open",
        "window.sources.every(s => s.readyState === EventSource.OPEN)",
    )
    .await?;
    let (status, stats) =
        https_request(addr, &der, api("GET", "/api/v1/stats", String::new())?).await?;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["streams"], json!(10), "{stats}");

    let publish = json!({ "to": { "topics": ["t"] }, "data": "to ten tabs' worth" });
    let (status, reply) = https_request(
        addr,
        &der,
        api("POST", "/api/v1/publish", publish.to_string())?,
    )
    .await?;
    assert_eq!(status, 200, "{reply}");
    page.wait_for(
        "all ten EventSources received the event",
        "window.received.every(r => r.length === 1 && r[0] === \"to ten tabs' worth\")",
    )
    .await?;

    // The page and its requests went over HTTP/2.
    let navigation = page
        .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        .await?;
    assert_eq!(navigation, json!("h2"));
    page.eval("fetch('/healthz').then(r => r.text())").await?;
    let fetched = page
        .wait_for(
            "the fetch shows in resource timing",
            "performance.getEntriesByType('resource')
               .filter(e => e.name.endsWith('/healthz')).map(e => e.nextHopProtocol)[0]",
        )
        .await?;
    assert_eq!(fetched, json!("h2"));

    page.eval("window.sources.forEach(s => s.close())").await?;
    let deadline = Instant::now() + DEADLINE;
    while server.hub().stats().await.streams != 0 {
        assert!(
            Instant::now() < deadline,
            "the hub still counts closed streams"
        );
        sleep(Duration::from_millis(50)).await;
    }
    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}

const MERCURE_PUBLISHER_KEY: &str = "browser-publisher-secret";
const MERCURE_SUBSCRIBER_KEY: &str = "browser-subscriber-secret";
const BOOKS: &str = "https://example.com/books/{id}";

/// A hub that verifies Mercure publisher and subscriber tokens.
async fn start_mercure_hub() -> Result<Server> {
    let mut config = pushwire_testkit::config();
    config.publisher_jwt_key = vec![MERCURE_PUBLISHER_KEY.into()];
    config.subscriber_jwt_key = vec![MERCURE_SUBSCRIBER_KEY.into()];
    Ok(pushwire::server::start(config).await?)
}

fn sign(key: &str, claims: Value) -> Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )?)
}

fn publisher_token() -> Result<String> {
    sign(
        MERCURE_PUBLISHER_KEY,
        json!({ "mercure": { "publish": ["*"] } }),
    )
}

fn subscriber_token() -> Result<String> {
    sign(
        MERCURE_SUBSCRIBER_KEY,
        json!({ "mercure": { "subscribe": [BOOKS] } }),
    )
}

/// Waits until the hub has no stream open.
async fn wait_no_streams(server: &Server) {
    let deadline = Instant::now() + DEADLINE;
    while server.hub().stats().await.streams != 0 {
        assert!(
            Instant::now() < deadline,
            "the hub still counts closed streams"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn event_source_in_a_page_receives_mercure_updates_and_only_granted_private_ones(
) -> Result<()> {
    let server = start_mercure_hub().await?;
    let addr = server.addr();
    let browser = Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.navigate(&format!("http://127.0.0.1:{}/", addr.port()))
        .await?;

    // Helpers in the page: sources that record what they dispatch, and a
    // publish by fetch with a Bearer token.
    page.eval(
        "window.received = {};
         window.sources = {};
         window.openSource = (name, url) => new Promise((resolve, reject) => {
           const source = new EventSource(url);
           window.sources[name] = source;
           window.received[name] = [];
           source.onmessage = (e) =>
             window.received[name].push({ type: e.type, lastEventId: e.lastEventId, data: e.data });
           source.onopen = () => resolve(true);
           source.onerror = () => {
             if (source.readyState === EventSource.CLOSED) reject(new Error(name + ': stream refused'));
           };
           setTimeout(() => reject(new Error(name + ': not open within 10 s')), 10000);
         });
         window.publish = async (token, fields) => {
           const body = new URLSearchParams();
           for (const [name, value] of fields) body.append(name, value);
           const response = await fetch('/.well-known/mercure', {
             method: 'POST', headers: { Authorization: 'Bearer ' + token }, body: body,
           });
           return { status: response.status, type: response.headers.get('content-type'),
                    body: await response.text() };
         };
         true",
    )
    .await?;
    let publish = |fields: Value| {
        let page = &page;
        async move {
            let token = publisher_token()?;
            let reply = page
                .eval(&format!("window.publish({}, {fields})", js(&token)))
                .await?;
            assert_eq!(reply["status"], json!(200), "publish refused: {reply}");
            assert!(
                reply["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("text/plain")),
                "publish reply: {reply}"
            );
            Ok::<String, cdp::Error>(reply["body"].as_str().unwrap_or_default().to_owned())
        }
    };

    let books = format!(
        "'/.well-known/mercure?topic=' + encodeURIComponent({})",
        js(BOOKS)
    );
    page.eval(&format!("window.openSource('anonymous', {books})"))
        .await?;
    let id = publish(json!([
        ["topic", "https://example.com/books/7"],
        ["id", "book-7-v2"],
        ["data", "first\n\nthird\n"]
    ]))
    .await?;
    assert_eq!(id, "book-7-v2");
    page.wait_for(
        "the anonymous source received the update",
        "window.received.anonymous.length >= 1",
    )
    .await?;
    assert_eq!(
        page.eval("window.received.anonymous").await?,
        json!([{ "type": "message", "lastEventId": "book-7-v2", "data": "first\n\nthird\n" }])
    );

    // A second source with a subscriber token in the URL.
    page.eval(&format!(
        "window.openSource('reader', {books} + '&authorization=' + encodeURIComponent({}))",
        js(&subscriber_token()?)
    ))
    .await?;
    publish(json!([
        ["topic", "https://example.com/books/7"],
        ["id", "book-7-private"],
        ["data", "for token holders"],
        ["private", "on"]
    ]))
    .await?;
    publish(json!([
        ["topic", "https://example.com/books/7"],
        ["id", "book-7-v3"],
        ["data", "for everyone"]
    ]))
    .await?;
    page.wait_for(
        "both sources received the last public update",
        "[window.received.anonymous, window.received.reader]
           .every(r => r.some(e => e.lastEventId === 'book-7-v3'))",
    )
    .await?;
    // Each stream receives in publish order: by the time the public update
    // after it arrived, the private one had arrived or never would.
    assert_eq!(
        page.eval("window.received.reader.map(e => [e.lastEventId, e.data])")
            .await?,
        json!([
            ["book-7-private", "for token holders"],
            ["book-7-v3", "for everyone"]
        ])
    );
    assert_eq!(
        page.eval("window.received.anonymous.map(e => e.lastEventId)")
            .await?,
        json!(["book-7-v2", "book-7-v3"])
    );

    page.eval("Object.values(window.sources).forEach(s => s.close())")
        .await?;
    wait_no_streams(&server).await;
    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}

/// Waits for the Mercure log entry with this event id; returns its type,
/// its data as text and its data as rendered.
async fn wait_for_update(page: &Page<'_>, id: &str) -> Result<Value> {
    page.wait_for(
        &format!("the update {id} is in the Mercure log"),
        &format!(
            "(() => {{
               for (const m of document.querySelectorAll('#mercure-log .msg')) {{
                 if (m.querySelector('.id')?.textContent !== 'id ' + {}) continue;
                 const data = m.querySelector('.data');
                 return {{ type: m.querySelector('.type').textContent, data: data.textContent,
                           shown: data.innerText }};
               }}
               return null;
             }})()",
            js(id)
        ),
    )
    .await
}

async fn publish_in_page(page: &Page<'_>, expected: &str) -> Result<Value> {
    page.click("#mercure-publish").await?;
    page.wait_for(
        &format!("the publish result says {expected:?}"),
        &format!(
            "(() => {{ const r = document.querySelector('#mercure-publish-result');
                 return r.textContent.includes({}) ? {{ ok: r.classList.contains('ok'),
                 text: r.textContent }} : null; }})()",
            js(expected)
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_page_mercure_tab_subscribes_and_publishes() -> Result<()> {
    let server = start_mercure_hub().await?;
    let addr = server.addr();
    let browser = Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.set_viewport(1280, 1100).await?;
    page.navigate(&format!("http://{addr}/")).await?;

    // The users tab is the default; the Mercure tab opens on click.
    let visible = "['#panel-users', '#panel-mercure', '#state', '#mercure-state']
                     .map(s => !document.querySelector(s).hidden)";
    assert_eq!(page.eval(visible).await?, json!([true, false, true, false]));
    page.click("#tab-mercure").await?;
    assert_eq!(page.eval(visible).await?, json!([false, true, false, true]));
    assert_eq!(page.text_of("#mercure-state").await?, "closed");

    page.fill("#mercure-selectors", BOOKS).await?;
    page.fill("#mercure-subscriber-token", &subscriber_token()?)
        .await?;
    page.click("#mercure-subscribe").await?;
    page.wait_for(
        "the Mercure stream is open",
        "document.querySelector('#mercure-state').textContent === 'open'",
    )
    .await?;

    // Without a publisher token the hub's refusal is shown.
    page.fill("#mercure-topics", "https://example.com/books/7")
        .await?;
    page.fill("#mercure-data", "no token").await?;
    let refused = publish_in_page(&page, "HTTP 401").await?;
    assert_eq!(refused["ok"], json!(false), "{refused}");
    assert!(
        refused["text"]
            .as_str()
            .is_some_and(|t| t.contains("\"code\": \"unauthorized\"")),
        "the hub's error JSON is not shown: {refused}"
    );

    // A typed update with a publisher id; the data is text, never markup.
    let data = "first\n\nthird\n<b>not bold</b>";
    page.fill("#mercure-publisher-token", &publisher_token()?)
        .await?;
    page.fill("#mercure-data", data).await?;
    page.fill("#mercure-id", "book-7-v2").await?;
    page.fill("#mercure-type", "book-updated").await?;
    let sent = publish_in_page(&page, "Published, event id book-7-v2.").await?;
    assert_eq!(sent["ok"], json!(true), "{sent}");
    assert_eq!(
        wait_for_update(&page, "book-7-v2").await?,
        json!({ "type": "book-updated", "data": data, "shown": data })
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#mercure-log b').length")
            .await?,
        json!(0)
    );

    // A private update reaches this subscriber, whose token grants the topic.
    page.fill("#mercure-id", "book-7-private").await?;
    page.fill("#mercure-type", "").await?;
    page.fill("#mercure-data", "for token holders").await?;
    page.click("#mercure-private").await?;
    publish_in_page(&page, "Published, event id book-7-private.").await?;
    assert_eq!(
        wait_for_update(&page, "book-7-private").await?,
        json!({ "type": "message", "data": "for token holders", "shown": "for token holders" })
    );
    page.screenshot(&screenshot_path("demo-page-mercure.png"))
        .await?;

    // Subscribed again without a token: private updates stay away.
    page.click("#mercure-unsubscribe").await?;
    assert_eq!(page.text_of("#mercure-state").await?, "closed");
    wait_no_streams(&server).await;
    page.fill("#mercure-subscriber-token", "").await?;
    page.click("#mercure-subscribe").await?;
    page.wait_for(
        "the anonymous Mercure stream is open",
        "document.querySelector('#mercure-state').textContent === 'open'",
    )
    .await?;
    page.fill("#mercure-id", "book-7-private-2").await?;
    publish_in_page(&page, "Published, event id book-7-private-2.").await?;
    page.click("#mercure-private").await?;
    page.fill("#mercure-id", "book-7-v3").await?;
    page.fill("#mercure-data", "for everyone").await?;
    publish_in_page(&page, "Published, event id book-7-v3.").await?;
    wait_for_update(&page, "book-7-v3").await?;
    // In publish order: the private update would have come before this one.
    assert_eq!(
        page.eval("[...document.querySelectorAll('#mercure-log .id')].map(e => e.textContent)")
            .await?,
        json!(["id book-7-v3", "id book-7-private", "id book-7-v2"])
    );

    page.click("#mercure-unsubscribe").await?;
    wait_no_streams(&server).await;
    // Back to the users tab (its streams are tested on a hub without keys).
    page.click("#tab-users").await?;
    assert_eq!(page.eval(visible).await?, json!([true, false, true, false]));

    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}
