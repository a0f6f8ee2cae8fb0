//! HTTP/1.1 as it crosses the wire (RFC 9112): framing, keep-alive, pipelining, header
//! rewriting and the defences against request smuggling, observed byte for byte.
//!
//! Both ends are raw sockets: a client that writes exact request bytes to the proxy and parses
//! what comes back, and (where the framing the proxy sends upstream matters, or the framing it
//! has to read) a backend that reads request bytes and writes exact response bytes. A hyper
//! client or backend would hide exactly what these tests are about.
//!
//! Requests on one connection may take different paths through the proxy (the plain path
//! for plain HTTP/1.1 requests, with a new upstream connection first and an idle one after;
//! hyper's path, with its pool, from the first request that is not plain on), so most
//! exchanges here run several rounds on one connection, and some mix the two kinds.
//!
//! The reader checks on every message it reads from the proxy, in either direction, what
//! RFC 9112 says a sender must never do: Content-Length together with Transfer-Encoding
//! (§6.2), a transfer coding other than chunked last (§6.1), Content-Length or
//! Transfer-Encoding on a 1xx or 204 response (RFC 9110 §8.6, RFC 9112 §6.1).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

/// Rounds of an exchange on one connection: a fresh upstream connection, then reused ones.
const ROUNDS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Keep-alive and pipelining

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for path in ["/one", "/two?x=1", "/three"] {
        client.send(get(path)).await;
        let answer = client.response().await;
        assert_eq!((answer.status(), answer.text()), (200, path));
    }
    assert_eq!(seen.so_far().len(), 3);
}

/// RFC 9112 §9.3.2: a server answers pipelined requests in the order they came, and a body
/// between two of them is not taken for the next request.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (backend, mut seen) =
        scripted(|r| ok(&format!("{} {} {}", r.method(), r.target(), r.text()))).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..2 {
        let batch = [
            get("/p1"),
            "POST /p2 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
            get("/p3?q=%20"),
        ]
        .concat();
        client.send(batch).await;
        for expected in ["GET /p1 ", "POST /p2 hello", "GET /p3?q=%20 "] {
            let answer = client.response().await;
            assert_eq!(
                (answer.status(), answer.text()),
                (200, expected),
                "round {round}"
            );
        }
    }
    assert_eq!(seen.so_far().len(), 6);
}

// ---------------------------------------------------------------------------------------------
// Response framing

#[tokio::test]
async fn content_length_response_is_relayed_byte_exact() {
    // Every byte value, and bytes that look like the end of a head or of a chunked body, over
    // many read buffers.
    let mut body = Vec::new();
    while body.len() < 256 * 1024 {
        body.extend(0..=255u8);
        body.extend_from_slice(b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n0\r\n\r\n");
    }
    let response = [
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
        body.clone(),
    ]
    .concat();
    let (backend, _seen) = scripted(move |_| Reply::keep(response.clone())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client.send(get("/bytes")).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 200, "round {round}");
        assert!(answer.body == body, "round {round}: the body differs");
        // Kept, not turned into chunks: clients show progress from it, and some need it.
        assert_eq!(
            answer.get("content-length"),
            Some(body.len().to_string().as_str()),
            "round {round}"
        );
        assert!(!answer.chunked, "round {round}");
    }
}

#[tokio::test]
async fn chunked_response_split_across_writes_is_relayed_whole() {
    // Splits in the middle of a size line, of chunk data, and between data and its CRLF; the
    // data itself holds an empty line. Each piece is its own write (see `write_pieces`).
    const PIECES: [&str; 6] = [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWi",
        "ki\r",
        "\n5\r\npedia\r\n",
        "E",
        "\r\n in\r\n\r\nchunks.\r\n",
        "0\r\n\r\n",
    ];
    let backend = raw_backend(|mut wire| async move {
        while wire.request().await.is_some() {
            wire.write_pieces(&PIECES).await;
        }
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client.send(get("/wiki")).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 200, "round {round}");
        assert_eq!(
            answer.text(),
            "Wikipedia in\r\n\r\nchunks.",
            "round {round}"
        );
    }
}

/// RFC 9112 §7.1.1 and §7.1.2: chunk extensions and a trailer section are part of the framing;
/// a recipient that does not use them still has to read past them.
#[tokio::test]
async fn chunk_extensions_and_trailers_are_read_past() {
    let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5;name=value\r\nhello\r\n\
                    6;a;b=\"quoted;\\\"x\"\r\n world\r\n\
                    0;last\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n";
    let (backend, _seen) = scripted(move |_| Reply::keep(response)).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .expect_ok("/ext", "hello world", format_args!("round {round}"))
            .await;
    }
}

/// RFC 9112 §6.3 item 8: a response with neither Content-Length nor Transfer-Encoding ends
/// when the server closes. The client may get it chunked (and keep its connection) or
/// delimited by close; either way all of it.
#[tokio::test]
async fn close_delimited_response_is_relayed_whole() {
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let response =
            format!("{version} 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end\r\n\r\n.");
        let (backend, mut seen) = scripted(move |_| Reply::close(response.clone())).await;
        let p = proxy_to(backend).await;

        let mut client = Wire::connect(p.addr).await;
        let mut rounds = 0;
        while rounds < ROUNDS {
            client.send(get("/close")).await;
            let answer = client.response().await;
            assert_eq!(answer.status(), 200, "{version}");
            assert_eq!(answer.text(), "until the end\r\n\r\n.", "{version}");
            rounds += 1;
            if !answer.chunked && !answer.has("content-length") {
                // Delimited by close: the reader has seen the end of the connection.
                client = Wire::connect(p.addr).await;
            }
        }
        assert_eq!(seen.so_far().len(), ROUNDS, "{version}");
    }
}

#[tokio::test]
async fn empty_content_length_response_keeps_the_connection() {
    let (backend, _seen) =
        scripted(|_| Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-App: empty\r\n\r\n"))
            .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client.send(get("/empty")).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 200, "round {round}");
        assert_eq!(answer.get("x-app"), Some("empty"));
        assert!(answer.body.is_empty(), "round {round}");
    }
}

/// RFC 9112 §6.1: Transfer-Encoding overrides Content-Length, and an intermediary that
/// forwards such a message must first remove the Content-Length. Relaying it would frame the
/// body by the wrong length: a truncated answer that looks complete ("he" for "hello"), or a
/// connection cut mid-body.
#[tokio::test]
async fn response_with_content_length_and_chunked_is_read_as_chunked() {
    for length in [2, 100] {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        );
        let (backend, _seen) = scripted(move |_| Reply::keep(response.clone())).await;
        let p = proxy_to(backend).await;

        let mut client = Wire::connect(p.addr).await;
        for round in 0..ROUNDS {
            let answer = client
                .expect_ok(
                    "/both",
                    "hello",
                    format_args!("Content-Length {length}, round {round}"),
                )
                .await;
            assert!(
                matches!(answer.get("content-length"), None | Some("5")),
                "Content-Length {length}, round {round}: {answer:?}"
            );
        }
        // hyper's path (an HTTP/1.0 client) follows the same rule.
        let mut client = Wire::connect(p.addr).await;
        client
            .send("GET /old HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, "hello"),
            "HTTP/1.0 client, Content-Length {length}: {answer:?}"
        );
    }
}

/// RFC 9112 §6.3 item 5: a proxy that gets a response with an invalid Content-Length answers
/// 502 and does not relay any of it.
#[tokio::test]
async fn response_with_invalid_content_length_is_502() {
    for framing in [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: abc",
    ] {
        let response = format!("HTTP/1.1 200 OK\r\n{framing}\r\nX-App: leaked\r\n\r\nhello!");
        let (backend, _seen) = scripted(move |_| Reply::close(response.clone())).await;
        let p = proxy_to(backend).await;

        let mut client = Wire::connect(p.addr).await;
        client.send(get("/bad")).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 502, "{framing}");
        assert!(!answer.has("x-app"), "{framing}");
        assert!(!answer.text().contains("hello"), "{framing}");
    }
}

// ---------------------------------------------------------------------------------------------
// Responses without a body

/// RFC 9110 §9.3.2 and §8.6: the answer to HEAD carries the Content-Length a GET would get,
/// and no body; a proxy that waited for those bytes, or sent some, would wreck the connection.
#[tokio::test]
async fn head_response_keeps_its_content_length_and_has_no_body() {
    let (backend, _seen) = scripted(|r| match (r.method(), r.target()) {
        ("HEAD", "/sized") => {
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-App: head\r\n\r\n")
        }
        ("HEAD", _) => Reply::keep("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        _ => ok(r.target()),
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .send("HEAD /sized HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let answer = client.response_to_head().await;
        assert_eq!(answer.status(), 200, "round {round}");
        assert_eq!(answer.get("content-length"), Some("1234"), "round {round}");
        assert_eq!(answer.get("x-app"), Some("head"));

        client
            .send("HEAD /chunked HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let answer = client.response_to_head().await;
        assert_eq!(answer.status(), 200, "round {round}");

        // Any stray byte after the heads would be read as the start of this answer.
        client
            .expect_ok("/after", "/after", format_args!("round {round}"))
            .await;
    }
}

/// RFC 9110 §15.3.5 and §15.4.5: 204 and 304 never have a body, whatever the head says (a 304
/// may carry the Content-Length of the representation).
#[tokio::test]
async fn no_content_and_not_modified_have_no_body() {
    let (backend, _seen) = scripted(|r| match r.target() {
        "/204" => Reply::keep("HTTP/1.1 204 No Content\r\nX-App: none\r\n\r\n"),
        "/304" => {
            Reply::keep("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n")
        }
        other => ok(other),
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client.send(get("/204")).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 204, "round {round}");
        assert_eq!(answer.get("x-app"), Some("none"));

        client
            .send("GET /304 HTTP/1.1\r\nHost: a.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
            .await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 304, "round {round}");
        assert_eq!(answer.get("etag"), Some("\"v1\""));

        client
            .expect_ok("/after", "/after", format_args!("round {round}"))
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

#[tokio::test]
async fn content_length_request_body_arrives_byte_exact() {
    const LEN: usize = 1024 * 1024;
    let body: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 4093) as u8).collect();
    let (backend, mut seen) = scripted(|r| ok(&r.body.len().to_string())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..2 {
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: {LEN}\r\n\r\n");
        client.send([head.as_bytes(), &body].concat()).await;
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, LEN.to_string().as_str()),
            "round {round}"
        );
        let received = seen.next().await;
        assert!(received.body == body, "round {round}: the body differs");
        // Sent on with its length, not re-chunked: some app servers refuse chunked uploads.
        assert_eq!(
            received.get("content-length"),
            Some(LEN.to_string().as_str())
        );
        assert!(!received.chunked);
    }
}

#[tokio::test]
async fn chunked_request_body_arrives_dechunked() {
    let (backend, mut seen) = scripted(|r| ok(&r.body.len().to_string())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .send(
                "POST /chunks HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 6;ext=1\r\nhello \r\n\
                 10\r\n0123456789abcdef\r\n\
                 1\r\n!\r\n\
                 0\r\nX-Trailer: t\r\n\r\n",
            )
            .await;
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, "23"),
            "round {round}"
        );
        let received = seen.next().await;
        assert_eq!(received.text(), "hello 0123456789abcdef!", "round {round}");
    }
}

/// RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` may wait for a 100 before
/// sending the body. The proxy either says 100 (and then the body goes through) or answers
/// at once; it never leaves the client waiting.
#[tokio::test]
async fn expect_100_continue_gets_the_body_through() {
    let (backend, mut seen) = scripted(|r| ok(r.text())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .send(
                "POST /expect HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\
                 Expect: 100-continue\r\n\r\n",
            )
            .await;
        let first = client.response().await;
        if first.status() != 100 {
            // A final answer without the body is allowed; the connection is then in no state
            // to go on with.
            assert!(first.status() >= 200, "round {round}: {first:?}");
            return;
        }
        client.send("hello world").await;
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, "hello world"),
            "round {round}"
        );
        assert_eq!(seen.next().await.text(), "hello world");
    }
}

/// A request body goes on as it arrives: the backend gets the first part before the client
/// has sent the rest.
#[tokio::test]
async fn request_body_streams_to_the_backend() {
    let (first_tx, mut first_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let backend = raw_backend(move |mut wire| {
        let first_tx = first_tx.clone();
        async move {
            while let Some(mut request) = wire.head().await {
                let mut body = request_framing(&mut request);
                let mut received = Vec::new();
                let mut told = false;
                while let Some(piece) = wire.body_piece(&mut body).await {
                    received.extend(piece);
                    if !told && received.len() >= 6 {
                        told = true;
                        let _ = first_tx.send(received.clone());
                    }
                }
                let reply = ok(&String::from_utf8_lossy(&received));
                wire.send(reply.bytes).await;
            }
        }
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for (round, head) in [
        "POST /s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 12\r\n\r\nfirst,",
        "POST /s HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst,\r\n",
        "POST /s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 12\r\n\r\nfirst,",
    ]
    .into_iter()
    .enumerate()
    {
        client.send(head).await;
        let first = within("the first part at the backend", first_rx.recv())
            .await
            .unwrap();
        assert_eq!(first, b"first,", "round {round}");
        if head.contains("chunked") {
            client.send("6\r\nsecond\r\n0\r\n\r\n").await;
        } else {
            client.send("second").await;
        }
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, "first,second"),
            "round {round}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request smuggling

/// RFC 9112 §6.1 and §6.3 item 3: with both Content-Length and chunked, the proxy may refuse,
/// or read the body as chunked, send it on without the Content-Length, and close the
/// connection after answering. Here the Content-Length covers a whole second request after
/// the empty chunked body: read by length it is body, read as chunked it is a request of its
/// own. Either way it must never reach the backend as one.
#[tokio::test]
async fn content_length_with_chunked_never_smuggles_a_request() {
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");

    for warm in [false, true] {
        for te_first in [false, true] {
            let mut client = Wire::connect(p.addr).await;
            if warm {
                client.send(get("/warm")).await;
                assert_eq!(client.response().await.status(), 200);
                assert_eq!(seen.next().await.target(), "/warm");
            }
            let (length, chunked) = (
                format!("Content-Length: {}\r\n", body.len()),
                "Transfer-Encoding: chunked\r\n".to_owned(),
            );
            let fields = if te_first {
                chunked + &length
            } else {
                length + &chunked
            };
            client
                .send(format!(
                    "POST /front HTTP/1.1\r\nHost: a.test\r\n{fields}\r\n{body}"
                ))
                .await;
            let answer = client.response().await;
            assert!(
                answer.status() == 200 || answer.status() == 400,
                "{answer:?}"
            );
            // Whatever came of the first request, the connection ends with it.
            client.closed().await;
            let reached = seen.so_far();
            assert!(reached.len() <= 1, "warm {warm}: {reached:?}");
            if let Some(front) = reached.first() {
                assert_eq!(front.target(), "/front");
                assert!(
                    front.text().is_empty(),
                    "read as chunked, the body is empty"
                );
            }
        }
    }
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    for fields in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 6\r\nContent-Length: 5\r\n",
        "Content-Length: 5, 6\r\n",
    ] {
        assert_refused(&format!(
            "POST /x HTTP/1.1\r\nHost: a.test\r\n{fields}\r\nhello!"
        ))
        .await;
    }
}

/// RFC 9112 §6.3 item 5: an invalid Content-Length in a request is a 400, then close.
#[tokio::test]
async fn invalid_content_length_is_refused() {
    for value in ["abc", "-1", "+5", "0x5", "5 5", "5;"] {
        assert_refused(&format!(
            "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: {value}\r\n\r\nhello"
        ))
        .await;
    }
}

/// Other heads that two parsers could read differently.
#[tokio::test]
async fn ambiguous_framing_is_refused() {
    for head in [
        // RFC 9112 §6.3 item 4: chunked must be the last transfer coding of a request.
        "POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        // RFC 9112 §5.1: whitespace between a field name and the colon is a 400.
        "POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length : 5\r\n\r\nhello",
    ] {
        assert_refused(head).await;
    }
}

/// RFC 9112 §7.1: a request body whose chunk framing is broken — a chunk size too large for any
/// length, a chunk line ended by a bare LF — is the client's fault: 400, never a 502 that blames
/// the instance, then close.
#[tokio::test]
async fn broken_chunk_framing_in_a_request_body_is_400() {
    let (backend, _seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;
    for body in [
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut client = Wire::connect(p.addr).await;
        client
            .send(format!(
                "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            ))
            .await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 400, "{body:?}: {}", answer.text());
        client.closed().await;
    }
}

/// RFC 9110 §9.3.7: `OPTIONS *` is about the server, not a resource: the proxy answers it
/// itself, 200 with the methods it forwards, and the connection stays usable; the asterisk
/// with another method names nothing and is a 400.
#[tokio::test]
async fn options_asterisk_is_answered_by_the_proxy() {
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;
    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .send("OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 200, "round {round}");
        assert_eq!(
            answer.get("allow"),
            Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH")
        );
        assert_eq!(answer.text(), "");
        client.send(get("/after")).await;
        assert_eq!(client.response().await.text(), "/after", "round {round}");
    }
    assert!(seen.so_far().iter().all(|r| r.target() == "/after"));
    let mut client = Wire::connect(p.addr).await;
    client.send("GET * HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(client.response().await.status(), 400);
}

/// RFC 9112 §5.2: obsolete line folding in a request is refused, or replaced by spaces before
/// the field goes on; never forwarded as is.
#[tokio::test]
async fn obsolete_line_folding_is_refused_or_unfolded() {
    let (backend, mut seen) = scripted(|_| ok("reached")).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    client
        .send("GET /fold HTTP/1.1\r\nHost: a.test\r\nX-Folded: one\r\n two\r\n\r\n")
        .await;
    let answer = client.response().await;
    if answer.status() == 400 {
        client.closed().await;
        assert!(seen.so_far().is_empty());
    } else {
        assert_eq!(answer.status(), 200);
        let value = seen.next().await.get("x-folded").unwrap().to_owned();
        assert!(!value.contains('\r') && !value.contains('\n'), "{value:?}");
    }
}

/// A request whose framing cannot be trusted gets 400 and the connection closes (nothing after
/// it can be told apart from the body), and the backend never sees it; as the first request of
/// a connection and as a later one.
async fn assert_refused(request: &str) {
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;
    for warm in [false, true] {
        let mut client = Wire::connect(p.addr).await;
        if warm {
            client.send(get("/warm")).await;
            assert_eq!(client.response().await.status(), 200);
        }
        client.send(request).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 400, "warm {warm}: {request:?}");
        client.closed().await;
        let reached: Vec<String> = seen
            .so_far()
            .iter()
            .map(|r| r.target().to_owned())
            .collect();
        let expected: &[&str] = if warm { &["/warm"] } else { &[] };
        assert_eq!(reached, expected, "{request:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Header rewriting

/// RFC 9110 §7.6.1 (hop-by-hop fields go), §7.6.3 (Via), and the X-Forwarded-* fields.
#[tokio::test]
async fn request_headers_are_rewritten_for_the_backend() {
    let (backend, mut seen) = scripted(|_| ok("ok")).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .send(
                "GET /h HTTP/1.1\r\n\
                 Host: a.test:8080\r\n\
                 Connection: X-Foo\r\n\
                 X-Foo: 1\r\n\
                 Keep-Alive: timeout=5\r\n\
                 Proxy-Connection: keep-alive\r\n\
                 X-Forwarded-For: 10.0.0.1\r\n\
                 X-Dup: first\r\n\
                 X-Dup: second\r\n\
                 X-Utf8: caf\u{e9}\r\n\
                 X-Spaces:   inner  spaces kept  \r\n\
                 \r\n",
            )
            .await;
        assert_eq!(client.response().await.status(), 200, "round {round}");
        let r = seen.next().await;

        assert_eq!(r.all("host"), ["a.test:8080"], "round {round}: {r:?}");
        for gone in ["x-foo", "keep-alive", "proxy-connection"] {
            assert!(!r.has(gone), "round {round}: {gone} reached the backend");
        }
        for option in r.list("connection") {
            assert!(
                !option.eq_ignore_ascii_case("x-foo"),
                "round {round}: {r:?}"
            );
        }
        assert_eq!(r.list("x-forwarded-for"), ["10.0.0.1", "127.0.0.1"]);
        assert_eq!(r.get("x-forwarded-proto"), Some("http"));
        assert_eq!(r.get("x-forwarded-host"), Some("a.test:8080"));
        assert_eq!(r.list("via").last().copied(), Some("1.1 turnout"));
        assert_eq!(r.all("x-dup"), ["first", "second"]);
        assert_eq!(r.get("x-utf8"), Some("caf\u{e9}"));
        assert_eq!(r.get("x-spaces"), Some("inner  spaces kept"));
        // A request without a body goes on without one, not as an empty chunked body.
        assert!(!r.chunked, "round {round}");
        assert!(matches!(r.get("content-length"), None | Some("0")));
        assert!(r.body.is_empty());
    }
}

/// RFC 9110 §7.7: a proxy must not change the path or query it forwards, and methods are
/// case-sensitive tokens that go on as they are (§9.1).
#[tokio::test]
async fn method_and_target_arrive_unchanged() {
    let (backend, mut seen) = scripted(|_| ok("ok")).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for (method, target, body) in [
        ("PATCH", "/a%20b?x=1&y=%2F", "abc"),
        ("PURGE", "/cache/%7Euser/./x/../y//z;p=1?q=a+b&&r=%26", ""),
        ("get", "/lower-case?", ""),
        ("DELETE", "/%E2%82%AC?%C3%A9=%E2%82%AC", ""),
        ("OPTIONS", "/?", "0123456789"),
    ] {
        client
            .send(format!(
                "{method} {target} HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
            .await;
        assert_eq!(client.response().await.status(), 200, "{method} {target}");
        let r = seen.next().await;
        assert_eq!((r.method(), r.target()), (method, target));
        assert_eq!(r.text(), body, "{method} {target}");
    }

    // RFC 9112 §3.2.2: in absolute form the target names the host, and the Host field is
    // replaced by it; the backend gets the origin form.
    client
        .send("GET http://a.test/abs?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
        .await;
    assert_eq!(client.response().await.status(), 200);
    let r = seen.next().await;
    assert_eq!(r.target(), "/abs?q=1");
    assert_eq!(r.all("host"), ["a.test"]);
}

/// A backend's hop-by-hop fields stay on its side, even its `Connection: close`: the client's
/// connection goes on, over a new upstream connection.
#[tokio::test]
async fn response_hop_by_hop_headers_stay_upstream() {
    let (backend, mut seen) = scripted(|r| {
        Reply::close(format!(
            "HTTP/1.1 200 OK\r\n\
             Connection: close, X-Internal\r\n\
             X-Internal: 1\r\n\
             Keep-Alive: timeout=5\r\n\
             Via: 1.1 app\r\n\
             X-App: kept\r\n\
             Content-Length: {}\r\n\r\n{}",
            r.target().len(),
            r.target()
        ))
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        let answer = client
            .expect_ok("/hop", "/hop", format_args!("round {round}"))
            .await;
        assert!(!answer.has("x-internal"), "round {round}: {answer:?}");
        assert!(!answer.has("keep-alive"), "round {round}: {answer:?}");
        for option in answer.list("connection") {
            assert!(
                !option.eq_ignore_ascii_case("close") && !option.eq_ignore_ascii_case("x-internal"),
                "round {round}: {answer:?}"
            );
        }
        assert_eq!(answer.get("x-app"), Some("kept"));
        assert_eq!(answer.list("via"), ["1.1 app", "1.1 turnout"]);
    }
    assert_eq!(seen.so_far().len(), ROUNDS);
}

/// Set-Cookie cannot be joined into one line (RFC 9110 §5.3), so each reaches the client as
/// it was, in order.
#[tokio::test]
async fn every_set_cookie_reaches_the_client_in_order() {
    let (backend, _seen) = scripted(|_| {
        Reply::keep(
            "HTTP/1.1 200 OK\r\n\
             Set-Cookie: a=1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\n\
             Set-Cookie: b=2; HttpOnly\r\n\
             X-Between: x\r\n\
             Set-Cookie: c=3\r\n\
             Content-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client.send(get("/cookies")).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 200, "round {round}");
        assert_eq!(
            answer.all("set-cookie"),
            [
                "a=1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
                "b=2; HttpOnly",
                "c=3"
            ],
            "round {round}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Closing

/// RFC 9112 §9.6: after answering a request with `Connection: close` the server closes (and
/// says so in the answer), and does not act on anything the client sent after it.
#[tokio::test]
async fn connection_close_from_the_client_is_honoured() {
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;

    for warm in [false, true] {
        let mut client = Wire::connect(p.addr).await;
        if warm {
            client.send(get("/warm")).await;
            assert_eq!(client.response().await.text(), "/warm");
        }
        let last = "GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        client.send([last, &get("/never")].concat()).await;
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, "/last"),
            "warm {warm}"
        );
        assert!(
            answer.list("connection").contains(&"close"),
            "warm {warm}: {answer:?}"
        );
        client.closed().await;
        let reached: Vec<String> = seen
            .so_far()
            .iter()
            .map(|r| r.target().to_owned())
            .collect();
        let expected: &[&str] = if warm {
            &["/warm", "/last"]
        } else {
            &["/last"]
        };
        assert_eq!(reached, expected);
    }
}

/// RFC 9112 §9.3: an HTTP/1.0 connection without keep-alive closes after one answer, and
/// (§6.1) that answer is not chunked, whatever the backend sent.
#[tokio::test]
async fn http10_client_gets_an_unchunked_answer_and_a_close() {
    let (backend, mut seen) = scripted(|_| {
        Reply::keep("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    })
    .await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    client
        .send("GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n")
        .await;
    let answer = client.response().await;
    assert_eq!((answer.status(), answer.text()), (200, "hello"));
    assert!(
        !answer.chunked && !answer.has("transfer-encoding"),
        "{answer:?}"
    );
    client.closed().await;

    // Instances speak HTTP/1.1; Via says what the client spoke.
    let r = seen.next().await;
    assert!(r.start.ends_with(" HTTP/1.1"), "{}", r.start);
    assert_eq!(r.list("via").last().copied(), Some("1.0 turnout"));
}

/// An HTTP/1.0 client that asks for keep-alive keeps its connection when the answer has a
/// length (RFC 9112 §C.2.2).
#[tokio::test]
async fn http10_keep_alive_is_kept() {
    let (backend, _seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    for round in 0..ROUNDS {
        client
            .send("GET /ka HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let answer = client.response().await;
        assert_eq!(
            (answer.status(), answer.text()),
            (200, "/ka"),
            "round {round}"
        );
        assert!(answer.has("content-length"), "round {round}: {answer:?}");
        assert!(
            answer
                .list("connection")
                .iter()
                .any(|o| o.eq_ignore_ascii_case("keep-alive")),
            "round {round}: {answer:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy's own answers

/// `max_header_bytes` (floored at 8 KiB) bounds every request head of a connection, not just
/// the first; a head over it is a 431 and the end of the connection.
#[tokio::test]
async fn oversized_request_head_is_431_on_any_request() {
    let config = ProxyConfig {
        max_header_bytes: 8 * 1024,
        ..ProxyConfig::default()
    };
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let a = Upstream::new(backend, "app/a");
    let p = start_proxy(config).await;
    p.proxy.apply(routes(&[("a.test", &a)]));
    let padded = |path: &str, pad: usize| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        )
    };

    for warm in [false, true] {
        let mut client = Wire::connect(p.addr).await;
        if warm {
            client.send(padded("/fits", 6 * 1024)).await;
            assert_eq!(client.response().await.text(), "/fits");
        }
        client.send(padded("/big", 16 * 1024)).await;
        let answer = client.response().await;
        assert_eq!(answer.status(), 431, "warm {warm}");
        client.closed().await;
    }
    let reached: Vec<String> = seen
        .so_far()
        .iter()
        .map(|r| r.target().to_owned())
        .collect();
    assert_eq!(reached, ["/fits"]);
}

/// The proxy's own answers (404 for a host nobody routes, 400 for a missing or doubled Host)
/// are complete responses: the pipelined requests behind them are answered too.
#[tokio::test]
async fn proxy_answers_keep_a_pipelined_connection_going() {
    let (backend, mut seen) = scripted(|r| ok(r.target())).await;
    let p = proxy_to(backend).await;

    let mut client = Wire::connect(p.addr).await;
    client
        .send(
            [
                "GET /unknown HTTP/1.1\r\nHost: nobody.test\r\n\r\n",
                &get("/good1"),
                "GET /no-host HTTP/1.1\r\n\r\n",
                &get("/good2"),
                "GET /two-hosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
                &get("/good3"),
            ]
            .concat(),
        )
        .await;
    for (status, body) in [
        (404, None),
        (200, Some("/good1")),
        (400, None),
        (200, Some("/good2")),
        (400, None),
        (200, Some("/good3")),
    ] {
        let answer = client.response().await;
        assert_eq!(answer.status(), status, "{answer:?}");
        if let Some(body) = body {
            assert_eq!(answer.text(), body);
        }
    }
    let reached: Vec<String> = seen
        .so_far()
        .iter()
        .map(|r| r.target().to_owned())
        .collect();
    assert_eq!(reached, ["/good1", "/good2", "/good3"]);
}

// ---------------------------------------------------------------------------------------------
// Upstream connections

/// A backend may close an idle keep-alive connection at any time (RFC 9112 §9.5) without
/// having said `Connection: close`: at once after its answer, or later while the connection
/// sits idle in the proxy. The proxy notices before it sends the next request on it, or sends
/// that request again elsewhere since it never reached the backend; either way the client sees
/// nothing, and no request reaches the backend twice.
#[tokio::test]
async fn backend_closing_an_idle_connection_is_invisible_to_the_client() {
    let close_now = Arc::new(Notify::new());
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let backend = {
        let close_now = close_now.clone();
        raw_backend(move |mut wire| {
            let (close_now, closed_tx, seen_tx) =
                (close_now.clone(), closed_tx.clone(), seen_tx.clone());
            async move {
                // One answer per connection, then close without a word.
                let Some(request) = wire.request().await else {
                    return;
                };
                let _ = seen_tx.send(request.target().to_owned());
                wire.send(ok(request.target()).bytes).await;
                if request.target().starts_with("/later") {
                    close_now.notified().await;
                }
                drop(wire);
                let _ = closed_tx.send(());
            }
        })
        .await
    };
    let p = proxy_to(backend).await;
    let mut expected = Vec::new();
    let mut exchange = async |client: &mut Wire, path: String| {
        client.send(get(&path)).await;
        let answer = client.response().await;
        assert_eq!((answer.status(), answer.text()), (200, path.as_str()));
        if path.starts_with("/later") {
            // The proxy has relayed the whole answer: its upstream connection is idle now.
            close_now.notify_one();
        }
        within("the backend to close its connection", closed_rx.recv())
            .await
            .unwrap();
        expected.push(path);
    };

    for when in ["at-once", "later"] {
        let mut client = Wire::connect(p.addr).await;
        for round in 0..ROUNDS + 1 {
            exchange(&mut client, format!("/{when}/{round}")).await;
        }
        // A new client connection meets the idle connections the earlier rounds left, which
        // the backend may have closed meanwhile.
        let mut client = Wire::connect(p.addr).await;
        exchange(&mut client, format!("/{when}/new-client")).await;
    }
    let mut reached = Vec::new();
    while let Ok(path) = seen_rx.try_recv() {
        reached.push(path);
    }
    assert_eq!(reached, expected);
}

/// A response body goes to the client as it arrives: the client reads the first part before
/// the backend has sent the second, whatever the framing.
#[tokio::test]
async fn response_body_streams_as_it_arrives() {
    const FIRST: &str = "first part;";
    const SECOND: &str = "second part";
    let go = Arc::new(Notify::new());
    let backend = {
        let go = go.clone();
        raw_backend(move |mut wire| {
            let go = go.clone();
            async move {
                while let Some(request) = wire.request().await {
                    let framing = request.target().trim_start_matches('/').to_owned();
                    let (head, first, rest) = match framing.as_str() {
                        "length" => (
                            format!("Content-Length: {}\r\n", FIRST.len() + SECOND.len()),
                            FIRST.to_owned(),
                            SECOND.to_owned(),
                        ),
                        "chunked" => (
                            "Transfer-Encoding: chunked\r\n".to_owned(),
                            format!("{:x}\r\n{FIRST}\r\n", FIRST.len()),
                            format!("{:x}\r\n{SECOND}\r\n0\r\n\r\n", SECOND.len()),
                        ),
                        _ => (String::new(), FIRST.to_owned(), SECOND.to_owned()),
                    };
                    wire.send(format!("HTTP/1.1 200 OK\r\n{head}\r\n{first}"))
                        .await;
                    go.notified().await;
                    wire.send(rest).await;
                    if framing == "close" {
                        return;
                    }
                }
            }
        })
        .await
    };
    let p = proxy_to(backend).await;

    for framing in ["length", "chunked", "close"] {
        let mut client = Wire::connect(p.addr).await;
        for round in 0..ROUNDS {
            client.send(get(&format!("/{framing}"))).await;
            let (mut answer, mut body) = within("the response head", async {
                let mut answer = client.head().await.expect("an answer");
                let body = response_framing(&mut answer, false);
                (answer, body)
            })
            .await;
            assert_eq!(answer.status(), 200);
            within("the first part", async {
                while answer.body.len() < FIRST.len() {
                    let piece = client.body_piece(&mut body).await;
                    answer.body.extend(piece.expect("more of the body"));
                }
            })
            .await;
            assert_eq!(answer.text(), FIRST, "{framing} round {round}");
            go.notify_one();
            within("the rest of the body", async {
                while let Some(piece) = client.body_piece(&mut body).await {
                    answer.body.extend(piece);
                }
            })
            .await;
            assert_eq!(answer.text(), [FIRST, SECOND].concat());
            if !answer.chunked && !answer.has("content-length") {
                break;
            }
        }
    }
}

/// Connections to an instance outlive the client connections that used them: clients that
/// come and go one after another reuse one, and a drain closes the idle ones.
#[tokio::test]
async fn instance_connections_are_reused_across_clients_and_closed_by_a_drain() {
    let (opened_tx, mut opened) = mpsc::unbounded_channel();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let backend = raw_backend(move |mut wire| {
        let _ = opened_tx.send(());
        let closed_tx = closed_tx.clone();
        async move {
            while let Some(request) = wire.request().await {
                let text = request.target().to_owned();
                wire.send(format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                ))
                .await;
            }
            let _ = closed_tx.send(());
        }
    })
    .await;
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(backend, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    for i in 0..5 {
        let mut client = Wire::connect(p.addr).await;
        client.send(get(&format!("/client/{i}"))).await;
        let answer = client.response().await;
        assert_eq!(answer.text(), format!("/client/{i}"));
    }
    within("the first connection", opened.recv()).await.unwrap();
    assert!(
        opened.try_recv().is_err(),
        "five clients one after another opened more than one connection to the instance"
    );
    assert!(closed.try_recv().is_err(), "the idle connection was closed");

    p.proxy.apply(routes(&[]));
    let outcome = within("the drain", a.drain(DEADLINE)).await;
    assert_eq!(outcome.cut, 0);
    within("the idle connection to close", closed.recv())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The raw HTTP/1 wire

/// A proxy routing `a.test` (with any port) to `backend`.
async fn proxy_to(backend: SocketAddr) -> TestProxy {
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(backend, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));
    p
}

/// A plain GET for `a.test`.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n")
}

/// One HTTP/1 message as it crossed the wire.
#[derive(Debug)]
struct Message {
    /// `HTTP/1.1 200 OK` or `GET / HTTP/1.1`.
    start: String,
    /// In the order received, names as sent.
    headers: Vec<(String, String)>,
    /// Decoded from its framing.
    body: Vec<u8>,
    /// The head said `Transfer-Encoding: chunked`.
    chunked: bool,
}

impl Message {
    fn part(&self, i: usize) -> &str {
        self.start.splitn(3, ' ').nth(i).unwrap_or("")
    }

    fn status(&self) -> u16 {
        self.part(1)
            .parse()
            .unwrap_or_else(|_| panic!("no status in {:?}", self.start))
    }

    fn method(&self) -> &str {
        self.part(0)
    }

    fn target(&self) -> &str {
        self.part(1)
    }

    /// Every value of the field `name`, one per field line.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The items of a list field over all its lines (RFC 9110 §5.6.1).
    fn list(&self, name: &str) -> Vec<&str> {
        self.all(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect()
    }

    /// The value of a field that must not appear twice.
    fn get(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} appears {} times: {self:?}",
            all.len()
        );
        all.first().copied()
    }

    fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a text body")
    }
}

/// How much of a body is left to read (RFC 9112 §6.3 picks the framing).
enum Body {
    Length(usize),
    /// Left of the current chunk's data; `None` at a chunk-size line, `Some(0)` before the CRLF
    /// that ends a chunk's data.
    Chunked(Option<usize>),
    UntilClose,
    Done,
}

/// The framing of a response from the head; `to_head` for an answer to HEAD.
fn response_framing(message: &mut Message, to_head: bool) -> Body {
    let status = message.status();
    let informational = (100..200).contains(&status);
    if informational || status == 204 {
        assert!(
            !message.has("content-length") && !message.has("transfer-encoding"),
            "framing fields on a {status}: {message:?}"
        );
    }
    if to_head || informational || status == 204 || status == 304 {
        return Body::Done;
    }
    framing(message, Body::UntilClose)
}

fn request_framing(message: &mut Message) -> Body {
    framing(message, Body::Done)
}

fn framing(message: &mut Message, otherwise: Body) -> Body {
    let codings = message.list("transfer-encoding");
    if !codings.is_empty() {
        assert!(
            !message.has("content-length"),
            "Content-Length and Transfer-Encoding both: {message:?}"
        );
        assert!(
            codings.last().unwrap().eq_ignore_ascii_case("chunked"),
            "chunked is not the last transfer coding: {message:?}"
        );
        message.chunked = true;
        return Body::Chunked(None);
    }
    match message.all("content-length")[..] {
        [] => otherwise,
        [length] => Body::Length(
            length
                .parse()
                .unwrap_or_else(|_| panic!("invalid Content-Length: {message:?}")),
        ),
        _ => panic!("several Content-Length fields: {message:?}"),
    }
}

/// One end of an HTTP/1 connection, read as the bytes arrive: the client side of a connection
/// to the proxy, or the backend side of one from it.
struct Wire {
    stream: TcpStream,
    /// Read but not used yet: the start of the next message when requests are pipelined.
    buf: Vec<u8>,
}

impl Wire {
    /// GET `path` and expect 200 with `text`; `context` names the case in a failure.
    async fn expect_ok(
        &mut self,
        path: &str,
        text: &str,
        context: std::fmt::Arguments<'_>,
    ) -> Message {
        self.send(get(path)).await;
        let answer = self.response().await;
        assert_eq!((answer.status(), answer.text()), (200, text), "{context}");
        answer
    }

    async fn connect(addr: SocketAddr) -> Wire {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        within("a write", self.stream.write_all(bytes.as_ref()))
            .await
            .unwrap();
    }

    /// Write each piece on its own. The tests run on a current-thread runtime, where a
    /// `yield_now` lets the driver deliver the piece and the proxy read it before the next is
    /// written; if it ever reads two at once, the test still holds, it just covers less.
    async fn write_pieces(&mut self, pieces: &[&str]) {
        for piece in pieces {
            self.send(piece).await;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Read more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        self.buf.reserve(64 * 1024);
        self.stream.read_buf(&mut self.buf).await.expect("read") > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.fill().await, "closed in the middle of a line");
        }
    }

    /// A message head, or `None` if the connection closed before one began.
    async fn head(&mut self) -> Option<Message> {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "closed in the middle of a head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let head = String::from_utf8_lossy(&head[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not a field line: {line:?}"));
                (name.to_owned(), value.trim_matches([' ', '\t']).to_owned())
            })
            .collect();
        Some(Message {
            start,
            headers,
            body: Vec::new(),
            chunked: false,
        })
    }

    /// The next bytes of a body, or `None` once it is complete.
    async fn body_piece(&mut self, body: &mut Body) -> Option<Vec<u8>> {
        loop {
            match body {
                Body::Done => return None,
                Body::Length(left) | Body::Chunked(Some(left)) if *left > 0 => {
                    if self.buf.is_empty() {
                        assert!(
                            self.fill().await,
                            "closed with {left} bytes of body missing"
                        );
                    }
                    let n = (*left).min(self.buf.len());
                    *left -= n;
                    return Some(self.buf.drain(..n).collect());
                }
                Body::Length(_) => *body = Body::Done,
                Body::Chunked(Some(_)) => {
                    let rest = self.line().await;
                    assert!(rest.is_empty(), "chunk data longer than its size: {rest:?}");
                    *body = Body::Chunked(None);
                }
                Body::Chunked(None) => {
                    let line = self.line().await;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .unwrap_or_else(|_| panic!("not a chunk-size line: {line:?}"));
                    if size == 0 {
                        // The trailer section, up to an empty line.
                        while !self.line().await.is_empty() {}
                        *body = Body::Done;
                    } else {
                        *body = Body::Chunked(Some(size));
                    }
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && !self.fill().await {
                        *body = Body::Done;
                    } else {
                        return Some(std::mem::take(&mut self.buf));
                    }
                }
            }
        }
    }

    async fn message(&mut self, mut message: Message, mut body: Body) -> Message {
        while let Some(piece) = self.body_piece(&mut body).await {
            message.body.extend(piece);
        }
        message
    }

    /// The next response from the proxy, body and all; an interim (1xx) one is returned as it is.
    async fn response(&mut self) -> Message {
        self.read_response(false).await
    }

    async fn response_to_head(&mut self) -> Message {
        self.read_response(true).await
    }

    async fn read_response(&mut self, to_head: bool) -> Message {
        within("a response", async {
            let mut message = self
                .head()
                .await
                .expect("the proxy closed the connection instead of answering");
            let body = response_framing(&mut message, to_head);
            self.message(message, body).await
        })
        .await
    }

    /// The next request the proxy sent this backend, or `None` once it has closed the
    /// connection.
    async fn request(&mut self) -> Option<Message> {
        let mut message = self.head().await?;
        let body = request_framing(&mut message);
        Some(self.message(message, body).await)
    }

    /// The proxy closes the connection, sending nothing more. A reset counts: the proxy may
    /// close with bytes of ours unread.
    async fn closed(&mut self) {
        let rest = within("the proxy to close the connection", async {
            let mut rest = std::mem::take(&mut self.buf);
            loop {
                rest.reserve(4096);
                match self.stream.read_buf(&mut rest).await {
                    Ok(0) => return rest,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return rest,
                    Err(e) => panic!("read: {e}"),
                }
            }
        })
        .await;
        assert!(
            rest.is_empty(),
            "bytes after the last answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A backend that speaks raw bytes: `serve` gets each connection the proxy opens, and closes
/// it by dropping it.
async fn raw_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(Wire) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(Wire {
                stream,
                buf: Vec::new(),
            }));
        }
    });
    addr
}

/// What a scripted backend writes for a request, and whether it closes the connection after.
struct Reply {
    bytes: Vec<u8>,
    close: bool,
}

impl Reply {
    fn keep(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: false,
        }
    }

    fn close(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: true,
        }
    }
}

/// 200 with `text` and a Content-Length.
fn ok(text: &str) -> Reply {
    Reply::keep(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    ))
}

/// The requests a backend has read, in order. Each is recorded before it is answered, so all
/// the requests behind the answers a client has are here.
struct Seen(mpsc::UnboundedReceiver<Message>);

impl Seen {
    async fn next(&mut self) -> Message {
        within("a request at the backend", self.0.recv())
            .await
            .expect("the backend is gone")
    }

    fn so_far(&mut self) -> Vec<Message> {
        let mut seen = Vec::new();
        while let Ok(message) = self.0.try_recv() {
            seen.push(message);
        }
        seen
    }
}

/// A raw backend that answers each request with `reply(&request)`.
async fn scripted<F>(reply: F) -> (SocketAddr, Seen)
where
    F: Fn(&Message) -> Reply + Send + Sync + 'static,
{
    let reply = Arc::new(reply);
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = raw_backend(move |mut wire| {
        let reply = reply.clone();
        let tx = tx.clone();
        async move {
            while let Some(request) = wire.request().await {
                let Reply { bytes, close } = reply(&request);
                let _ = tx.send(request);
                wire.send(bytes).await;
                if close {
                    return;
                }
            }
        }
    })
    .await;
    (addr, Seen(rx))
}
