//! The admin console at `/admin`: served with a strict policy, turned off
//! by `--no-admin` (the demo page by `--no-demo`), the topics route it reads,
//! and the console itself driven in headless Chromium against a hub with a
//! publisher key. The browser test needs Chromium and fails without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "browser/cdp.rs"]
#[allow(dead_code)]
mod cdp;

use base64::Engine;
use serde_json::json;
use tokio::time::{sleep, Duration, Instant};

use cdp::{js, screenshot_path, Browser, DEADLINE};
use pushwire_testkit::prelude::*;

const KEY: &str = "console-s3cret";

fn keyed() -> pushwire::config::ServeConfig {
    let mut config = config();
    config.publisher_key = Some(KEY.to_owned());
    config
}

/// The SHA-256 source a policy must list for an inline element's text.
fn hash_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn inline(page: &str, tag: &str) -> String {
    let (_, rest) = page.split_once(&format!("<{tag}>")).unwrap();
    rest.split_once(&format!("</{tag}>")).unwrap().0.to_owned()
}

#[tokio::test]
async fn the_console_page_loads_without_a_key_under_a_strict_policy() {
    let server = start(keyed()).await;
    let reply = get(server.addr(), "/admin").await;
    assert_eq!(reply.status, 200, "the page itself needs no credential");
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    let policy = reply.header("content-security-policy").unwrap();
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    for wanted in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(directives.contains(&wanted), "{wanted} missing: {policy}");
    }
    // Exactly the page's own script and style, nothing inline besides.
    let page = &reply.body;
    assert!(directives
        .contains(&format!("script-src {}", hash_source(&inline(page, "script"))).as_str()));
    assert!(
        directives.contains(&format!("style-src {}", hash_source(&inline(page, "style"))).as_str())
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.matches("<script").count(), 1, "one inline script");
    assert_eq!(page.matches("<style").count(), 1, "one inline style");
    // Self-contained, and hub data never becomes markup.
    for absent in [
        "src=",
        "<link",
        "http://",
        "https://",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "style=\"",
    ] {
        assert!(!page.contains(absent), "the page contains {absent:?}");
    }
    // No inline handlers (`onclick=`) in the markup: the policy would refuse them.
    let markup = page.replace(&inline(page, "script"), "");
    let handler = regex::Regex::new(r"<[^>]*\son[a-z]+\s*=").unwrap();
    assert!(!handler.is_match(&markup), "an inline event handler");
    // No figure is in the page: it has to ask the API, which wants the key.
    assert_eq!(get(server.addr(), "/api/v1/stats").await.status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn no_admin_and_no_demo_each_turn_off_only_their_page() {
    let mut config = config();
    config.no_admin = true;
    let server = start(config).await;
    let addr = server.addr();
    let reply = get(addr, "/admin").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "not_found");
    assert_eq!(get(addr, "/").await.status, 200, "the demo page stays");
    assert_eq!(get(addr, "/api/v1/stats").await.status, 200);
    assert_eq!(get(addr, "/api/v1/topics").await.status, 200);
    server.shutdown().await;

    let mut config = pushwire_testkit::config();
    config.no_demo = true;
    let server = start(config).await;
    let addr = server.addr();
    let reply = get(addr, "/").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "not_found");
    assert_eq!(get(addr, "/admin").await.status, 200, "the console stays");
    assert_eq!(get(addr, "/healthz").await.status, 200);
    let mut stream = SseClient::connect(addr, "/api/v1/stream?user=u").await;
    assert_eq!(stream.status, 200);
    publish(addr, json!({"to": {"users": ["u"]}, "data": "still here"})).await;
    assert_eq!(stream.next().await.data, "still here");
    server.shutdown().await;

    // Both pages served by default.
    let server = start_default().await;
    assert_eq!(get(server.addr(), "/").await.status, 200);
    assert_eq!(get(server.addr(), "/admin").await.status, 200);
    server.shutdown().await;
}

/// The variables, through the real binary (a test cannot set the
/// environment of its own process safely).
#[test]
fn the_pages_are_turned_off_by_their_environment_variables() {
    let shown = |env: &[(&str, &str)]| -> toml::Table {
        let out = std::process::Command::new(pushwire_testkit::hub_binary!())
            .arg("check-config")
            .env_remove("PUSHWIRE_NO_DEMO")
            .env_remove("PUSHWIRE_NO_ADMIN")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
    };
    let flags = |t: &toml::Table| (t["no-demo"].as_bool(), t["no-admin"].as_bool());
    assert_eq!(flags(&shown(&[])), (Some(false), Some(false)));
    let both = shown(&[("PUSHWIRE_NO_DEMO", "true"), ("PUSHWIRE_NO_ADMIN", "1")]);
    assert_eq!(flags(&both), (Some(true), Some(true)));
    let admin = shown(&[("PUSHWIRE_NO_ADMIN", "yes")]);
    assert_eq!(flags(&admin), (Some(false), Some(true)));
}

#[tokio::test]
async fn topics_lists_exact_topics_with_their_streams_to_a_publisher_only() {
    let server = start(keyed()).await;
    let addr = server.addr();
    let _both = SseClient::connect(addr, "/api/v1/stream?topic=news&topic=alerts").await;
    let news = SseClient::connect(addr, "/api/v1/stream?topic=news").await;
    // A Mercure subscriber through a URI template: a selector, no topic.
    let template = SseClient::connect(addr, "/.well-known/mercure?topic=%2Fbooks%2F%7Bid%7D").await;
    assert_eq!(template.status, 200);
    let _user = SseClient::connect(addr, "/api/v1/stream?user=alice").await;

    let bare = get(addr, "/api/v1/topics").await;
    assert_eq!(bare.status, 401, "{}", bare.body);
    assert!(bare
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    let wrong = get_with(addr, "/api/v1/topics", &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);

    let bearer = format!("Bearer {KEY}");
    let listed = || async {
        let reply = get_with(addr, "/api/v1/topics", &[("Authorization", &bearer)]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    };
    // The template counts under no topic.
    assert_eq!(
        listed().await,
        json!({"count": 2, "topics": [
            {"topic": "alerts", "streams": 1},
            {"topic": "news", "streams": 2},
        ]})
    );
    drop(news);
    eventually("the closed stream leaves its topic", || async {
        listed().await["topics"][1]["streams"] == 1
    })
    .await;
    server.shutdown().await;

    // A keyless hub answers its loopback callers, as the rest of the API does.
    let server = start_default().await;
    let reply = get(server.addr(), "/api/v1/topics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"count": 0, "topics": []}));
    server.shutdown().await;
}

/// JavaScript for the row of the users table whose user is `user`.
fn user_row(user: &str) -> String {
    format!(
        "[...document.querySelectorAll('#users tr')].find(r => r.dataset.user === {})",
        js(user)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_shows_a_user_publishes_and_browses_history() -> cdp::Result<()> {
    let server = start(keyed()).await;
    let addr = server.addr();
    let browser = Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.set_viewport(1280, 1000).await?;
    page.navigate(&format!("http://{addr}/admin")).await?;

    // Without a credential: the sign-in form, no figures.
    page.wait_for(
        "the sign-in form is shown",
        "!document.querySelector('#login').hidden",
    )
    .await?;
    assert_eq!(
        page.eval("document.querySelector('#console').hidden")
            .await?,
        json!(true)
    );
    page.fill("#credential", "not-the-key").await?;
    page.click("#login-button").await?;
    let refused = page
        .wait_for(
            "a wrong key is refused",
            "document.querySelector('#login-result.err')?.textContent || null",
        )
        .await?;
    assert!(
        refused.as_str().is_some_and(|t| t.contains("unauthorized")),
        "{refused}"
    );
    assert_eq!(page.text_of("#fig-streams").await?, "–");

    page.fill("#credential", KEY).await?;
    page.click("#login-button").await?;
    page.wait_for(
        "the console opens",
        "!document.querySelector('#console').hidden && \
         document.querySelector('#fig-streams').textContent === '0'",
    )
    .await?;
    assert_eq!(
        page.eval("sessionStorage.getItem('pushwire.admin.credential')")
            .await?,
        json!(KEY)
    );

    // Streams opened from here, over TCP; one user id is markup.
    let mut alice = SseClient::connect(addr, "/api/v1/stream?user=alice").await;
    assert_eq!(alice.status, 200);
    let markup = "<img src=x>mallory";
    let _mallory = SseClient::connect(
        addr,
        &format!("/api/v1/stream?user={}&topic=news", form_value(markup)),
    )
    .await;
    page.wait_for(
        "alice is listed with one stream",
        &format!("{}?.cells[1].textContent === '1'", user_row("alice")),
    )
    .await?;
    page.wait_for(
        "the markup user is listed as text",
        &format!(
            "{}?.cells[0].textContent === {}",
            user_row(markup),
            js(markup)
        ),
    )
    .await?;
    page.wait_for(
        "the topic is listed",
        "[...document.querySelectorAll('#topics tr')].some(r => \
           r.dataset.topic === 'news' && r.cells[1].textContent === '1')",
    )
    .await?;
    assert_eq!(page.text_of("#fig-streams").await?, "2");
    assert_eq!(page.text_of("#fig-published").await?, "0");

    // Published from the console's form, to alice.
    let data = "hello\nfrom the console <b>bold?</b>";
    page.fill("#pub-kind", "user").await?;
    page.fill("#pub-target", "alice").await?;
    page.fill("#pub-event", "greeting").await?;
    page.fill("#pub-data", data).await?;
    page.click("#pub-send").await?;
    let sent = page
        .wait_for(
            "the publish result names the event id",
            "document.querySelector('#pub-result.ok')?.textContent || null",
        )
        .await?;
    let id = sent
        .as_str()
        .and_then(|t| t.strip_prefix("Published, event id "))
        .ok_or_else(|| format!("unexpected result {sent}"))?
        .to_owned();
    let received = alice.next().await;
    assert_eq!(received.data, data);
    assert_eq!(received.event, "greeting");
    assert_eq!(received.id.as_deref(), Some(id.as_str()));

    // The figures move, with a rate between two polls.
    page.wait_for(
        "the figures count the event and its delivery",
        "document.querySelector('#fig-published').textContent === '1' && \
         document.querySelector('#fig-deliveries').textContent === '1' && \
         Number(document.querySelector('#fig-published-rate').textContent) > 0",
    )
    .await?;

    // History by user: the event's frame, exactly as the stream sent it.
    page.eval(&format!(
        "{}.querySelector('button').click()",
        user_row("alice")
    ))
    .await?;
    let frame = page
        .wait_for(
            "alice's history shows the event",
            &format!(
                "[...document.querySelectorAll('#history .event')] \
                   .find(e => e.dataset.id === {})?.querySelector('.frame').textContent ?? null",
                js(&id)
            ),
        )
        .await?;
    let frame = frame.as_str().unwrap_or_default().to_owned();
    assert_eq!(
        frame,
        format!("id: {id}\nevent: greeting\ndata: hello\ndata: from the console <b>bold?</b>\n\n")
    );
    let wire = String::from_utf8_lossy(&alice.raw).into_owned();
    assert!(
        wire.contains(&frame),
        "{frame:?} is not on the wire: {wire:?}"
    );
    assert_eq!(
        page.eval("document.querySelector('#history-value').value")
            .await?,
        json!("alice")
    );
    // History by topic: alice's event is for a user, so not there.
    page.fill("#history-kind", "topic").await?;
    page.fill("#history-value", "news").await?;
    page.click("#history-load").await?;
    page.wait_for(
        "the topic's history is empty",
        "document.querySelector('#history-result').textContent.startsWith('No event') && \
         document.querySelectorAll('#history .event').length === 0",
    )
    .await?;
    page.eval(&format!(
        "{}.querySelector('button').click()",
        user_row("alice")
    ))
    .await?;
    page.wait_for(
        "alice's history is back",
        "document.querySelectorAll('#history .event').length === 1",
    )
    .await?;

    // Nothing from the hub became markup.
    assert_eq!(
        page.eval("document.querySelectorAll('main img, main b').length")
            .await?,
        json!(0)
    );
    let shot = screenshot_path("admin-console.png");
    page.screenshot(&shot).await?;
    println!("screenshot: {}", shot.display());

    // Close: alice's stream ends and she leaves the list.
    page.eval(&format!(
        "{}.querySelector('button.close').click()",
        user_row("alice")
    ))
    .await?;
    assert!(alice.wait_end(DEADLINE).await, "alice's stream did not end");
    page.wait_for(
        "the close is reported and alice is gone",
        &format!(
            "document.querySelector('#close-result.ok')?.textContent === 'Closed 1 stream(s) of alice' && \
             !{}",
            user_row("alice")
        ),
    )
    .await?;

    // Signing out forgets the key and hides every figure.
    page.click("#logout").await?;
    page.wait_for(
        "signed out",
        "!document.querySelector('#login').hidden && document.querySelector('#console').hidden && \
         sessionStorage.getItem('pushwire.admin.credential') === null && \
         document.querySelectorAll('#users tr').length === 0",
    )
    .await?;
    let log = cdp.log();
    assert!(
        !log.contains("Content Security Policy"),
        "the policy refused something the page does:\n{log}"
    );

    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_needs_no_key_from_loopback_on_a_keyless_hub() -> cdp::Result<()> {
    let server = start_default().await;
    let addr = server.addr();
    let browser = Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    page.navigate(&format!("http://{addr}/admin")).await?;
    page.wait_for(
        "the console opens without a key",
        "!document.querySelector('#console').hidden && \
         document.querySelector('#mode').textContent === 'keyless (loopback)'",
    )
    .await?;
    let _bob = SseClient::connect(addr, "/api/v1/stream?user=bob").await;
    page.wait_for("bob is listed", &user_row("bob")).await?;
    let deadline = Instant::now() + DEADLINE;
    while page.text_of("#fig-users").await? != "1" {
        assert!(Instant::now() < deadline, "the users figure stays at 0");
        sleep(Duration::from_millis(100)).await;
    }
    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}
