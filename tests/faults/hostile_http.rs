//! A corpus of hostile HTTP requests.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Daemon, Work};
use crate::{assert_healthy, database, integrity_ok, tree};

/// One raw HTTP/1.1 exchange (the request must ask `Connection: close`).
/// Returns status, lower-cased headers and body; a connection the daemon
/// closes without answering gives status 0.
fn raw(port: u16, request: &[u8]) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The daemon may answer (413, 431) before reading everything and close:
    // a failed write is part of the exchange.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, HashMap::new(), response);
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = response[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        body = procurator_ci::repos::hook::dechunk(&body);
    }
    (status, headers, body)
}

/// Asserts the documented error shape.
fn assert_json_error(what: &str, status: u16, body: &[u8]) -> Value {
    assert!((400..500).contains(&status), "{what}: status {status}");
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: {status} without a JSON error ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert!(value["error"]["code"].is_string(), "{what}: {value}");
    assert!(value["error"]["message"].is_string(), "{what}: {value}");
    value
}

#[test]
fn a_corpus_of_hostile_requests_gets_json_4xx_and_changes_nothing() {
    let mut daemon = Daemon::start("nix_bin = \"/bin/true\"");
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let commit = work.commit_flake(&[("ok", &common::passing("x"))]);
    work.push(&["HEAD:refs/heads/main"]);
    let id = daemon.builds()[0]["id"].as_i64().unwrap();
    daemon.wait_final(id);
    let token = daemon.token();
    let port = daemon.port;
    let conn = database(&daemon);
    let count = |conn: &rusqlite::Connection| -> (i64, i64) {
        (
            conn.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))
                .unwrap(),
            conn.query_row("SELECT COUNT(*) FROM repos", [], |r| r.get(0))
                .unwrap(),
        )
    };
    let rows_before = count(&conn);
    let files_before = tree(&daemon.state());
    let outside_before = tree(daemon.dir.as_path());

    let post = |path: &str, content_type: Option<&str>, body: &[u8], auth: bool| {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(ct) = content_type {
            request.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if auth {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        raw(port, &bytes)
    };
    let get = |target: &str| {
        raw(
            port,
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };

    // Malformed JSON, on every endpoint that reads a body.
    let malformed: &[&[u8]] = &[
        b"",
        b"{",
        b"}",
        b"[]",
        b"null",
        b"\"x\"",
        b"{\"repo\": }",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": ",
        b"{\"repo\": \"r\" \"branch\": \"main\"}",
        b"{'repo': 'r'}",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": \"x\", \"repo\": \"r\"}",
        b"{\"repo\": 1, \"branch\": [], \"commit\": {}}",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": null}",
        b"\xef\xbb\xbf{\"repo\": \"r\"}",
        b"{\"name\": \"\\ud800\"}",
        b"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]}",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": \"aaaa\", \"extra\": 1}",
        b"1e999999",
        b"{\"name\": \"ok\", \"description\": 12}",
    ];
    for path in ["/api/builds", "/api/repos"] {
        for body in malformed {
            let (status, _, reply) = post(path, Some("application/json"), body, true);
            let what = format!("POST {path} {:?}", String::from_utf8_lossy(body));
            let error = assert_json_error(&what, status, &reply);
            assert!(status == 400 || status == 422, "{what}: {status} {error}");
        }
    }
    // Deeply nested JSON does not overflow the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, reply) = post(
        "/api/builds",
        Some("application/json"),
        deep.as_bytes(),
        true,
    );
    assert_json_error("deep nesting", status, &reply);
    // Invalid UTF-8 inside a JSON string, and raw bytes.
    for body in [
        &b"{\"repo\": \"r\xff\", \"branch\": \"main\", \"commit\": \"x\"}"[..],
        &b"{\"name\": \"\xc3\x28\"}"[..],
        &b"\xff\xfe\xfd"[..],
        &b"\x00\x00\x00"[..],
    ] {
        for path in ["/api/builds", "/api/repos"] {
            let (status, _, reply) = post(path, Some("application/json"), body, true);
            assert_json_error(&format!("{path} invalid UTF-8 {body:?}"), status, &reply);
        }
    }
    // Wrong content types.
    let good = json!({"repo": "r", "branch": "main", "commit": commit}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("json"),
        Some("application/json-patch"),
    ] {
        for path in ["/api/builds", "/api/repos"] {
            let (status, _, reply) = post(path, content_type, good.as_bytes(), true);
            let error = assert_json_error(&format!("{path} as {content_type:?}"), status, &reply);
            assert_eq!(status, 415, "{content_type:?}: {error}");
        }
    }
    // Bodies over the limit: declared, and chunked without a length.
    let huge = format!(
        "{{\"repo\": \"r\", \"branch\": \"main\", \"commit\": \"{commit}\", \"author\": \"{}\"}}",
        "a".repeat(1024 * 1024 + 1)
    );
    for path in ["/api/builds", "/api/repos"] {
        let (status, _, reply) = post(path, Some("application/json"), huge.as_bytes(), true);
        let error = assert_json_error(&format!("{path} over the limit"), status, &reply);
        assert_eq!(status, 413, "{error}");
        let mut chunked = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for piece in huge.as_bytes().chunks(64 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (status, _, reply) = raw(port, &chunked);
        let error = assert_json_error(&format!("{path} chunked over the limit"), status, &reply);
        assert_eq!(status, 413, "{error}");
    }
    // A declared length far beyond what is sent, and a lying one.
    let (status, _, reply) = raw(
        port,
        format!(
            "POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 99999999999\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_json_error("enormous Content-Length", status, &reply);
    // Without the token, even a good body is refused before anything runs.
    let (status, _, reply) = post(
        "/api/builds",
        Some("application/json"),
        good.as_bytes(),
        false,
    );
    assert_eq!(status, 401, "{reply:?}");
    assert_json_error("no token", status, &reply);
    // Huge headers: a large but legal one is served; too many headers or an
    // oversized head is refused by the HTTP layer before the router, still
    // with a JSON error the client can read although it was still sending.
    let big = "x".repeat(8 * 1024);
    let (status, _, reply) = raw(
        port,
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200, "{reply:?}");
    // Past the 16 KiB a head may take (what a stalled connection may hold).
    let bigger = "x".repeat(17 * 1024);
    let (status, _, reply) = raw(
        port,
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {bigger}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 431, "a 17 KiB header");
    assert_json_error("a 17 KiB header", status, &reply);
    let (status, _, reply) = raw(
        port,
        format!(
            "POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}",
            "y".repeat(64 * 1024)
        )
        .as_bytes(),
    );
    assert_json_error("huge wrong token", status, &reply);
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _, reply) = raw(
        port,
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 431, "2000 headers");
    let value = assert_json_error("2000 headers", status, &reply);
    assert_eq!(value["error"]["code"], "headers_too_large");
    let enormous = "z".repeat(2 * 1024 * 1024);
    let (status, _, reply) = raw(
        port,
        format!(
            "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {enormous}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(status, 431, "a 2 MiB header");
    assert_json_error("a 2 MiB header", status, &reply);
    let long_target = format!("/api/builds?repo={}", "r".repeat(100_000));
    let (status, _, reply) = raw(
        port,
        format!("GET {long_target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    // Over the 16 KiB a request head may take, before its end is seen.
    assert_eq!(status, 431, "a 100 kB target");
    let value = assert_json_error("a 100 kB target", status, &reply);
    assert_eq!(value["error"]["code"], "headers_too_large");
    for (what, request) in [
        ("a request line of junk", &b"GARBAGE\r\n\r\n"[..]),
        (
            "a header without a colon",
            b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        ),
        (
            "a non-numeric content length",
            b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        ),
        (
            "a NUL in the target",
            b"GET /api/\0health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        ),
    ] {
        let (status, headers, reply) = raw(port, request);
        assert_eq!(status, 400, "{what}: {reply:?}");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{what}"
        );
        let value = assert_json_error(what, status, &reply);
        assert_eq!(value["error"]["code"], "malformed_request", "{what}");
    }

    // Path traversal and junk in every path parameter.
    let segments = [
        "..",
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        "..%5c..%5cwindows",
        "%2fetc%2fpasswd",
        "r%00",
        "r%0a",
        "%ff%fe",
        "r.git",
        "-h",
        "....%2f%2f",
        "r%2f..%2f..",
        "%252e%252e",
        "' OR 1=1 --",
        "0",
        "-1",
        "9223372036854775808",
        "1e3",
        "0x10",
    ];
    for seg in segments {
        let enc = seg.replace(' ', "%20").replace('\'', "%27");
        for (method, target) in [
            ("GET", format!("/api/repos/{enc}")),
            ("DELETE", format!("/api/repos/{enc}?confirm={enc}")),
            ("POST", format!("/api/repos/{enc}/scan")),
            ("GET", format!("/api/repos/{enc}/badge.svg")),
            ("GET", format!("/api/builds/{enc}")),
            ("GET", format!("/api/builds/{enc}/logs")),
            ("POST", format!("/api/builds/{enc}/cancel")),
            ("POST", format!("/api/builds/{enc}/rebuild")),
            ("GET", format!("/api/events?build={enc}")),
        ] {
            let (status, _, reply) = raw(
                port,
                format!(
                    "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
                     Connection: close\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
            assert_json_error(&format!("{method} {target}"), status, &reply);
        }
    }
    // Raw (unencoded) traversal never escapes the router.
    for target in [
        "/api/repos/../../etc/passwd",
        "/api/../../../etc/passwd",
        "/../../etc/passwd",
        "/api/builds/1/../../../etc/passwd",
        "/static/../../Cargo.toml",
        "//etc/passwd",
    ] {
        let (status, _, reply) = get(target);
        assert!(
            !String::from_utf8_lossy(&reply).contains("root:"),
            "{target} leaked a file"
        );
        assert_json_error(target, status, &reply);
    }

    // SQL metacharacters in every query parameter: refused, or answered
    // as the literal value they are (nothing matches).
    let sql = [
        "' OR '1'='1",
        "1; DROP TABLE builds; --",
        "\" OR \"\"=\"",
        "%",
        "_",
        "1 UNION SELECT * FROM repos",
        "main' --",
        "*",
        "\\",
    ];
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    for value in sql {
        let v = encode(value);
        for target in [
            format!("/api/builds?repo={v}"),
            format!("/api/builds?branch={v}"),
            format!("/api/builds?status={v}"),
            format!("/api/builds?limit={v}"),
            format!("/api/builds?before={v}"),
            format!("/api/builds?repo=r&branch={v}"),
            format!("/api/builds/{id}/logs?offset={v}"),
            format!("/api/builds/{id}/logs?attempt={v}"),
            format!("/api/builds/{id}/logs?follow={v}"),
            format!("/api/events?build={v}"),
            format!("/api/events?offset={v}"),
            format!("/api/repos/r/badge.svg?branch={v}"),
        ] {
            let (status, headers, reply) = get(&target);
            if status == 200 {
                if target.starts_with("/api/builds?") {
                    let listing: Value = serde_json::from_slice(&reply).unwrap();
                    assert_eq!(
                        listing["builds"].as_array().unwrap().len(),
                        0,
                        "{target} matched builds"
                    );
                } else {
                    assert!(
                        headers
                            .get("content-type")
                            .is_some_and(|c| c.starts_with("image/svg")),
                        "{target}: 200 with {headers:?}"
                    );
                }
            } else {
                assert_json_error(&target, status, &reply);
            }
        }
        let (status, _, reply) = raw(
            port,
            format!(
                "DELETE /api/repos/r?confirm={v} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_json_error("DELETE with SQL in confirm", status, &reply);
    }

    // Negative, zero where meaningless, enormous and malformed numbers.
    let malformed_numbers = [
        "-1",
        "-9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999999",
        "1e3",
        "0x10",
        "1.5",
        "+-1",
        "",
        "NaN",
        " 1",
        "1 ",
    ];
    let mut refused: Vec<String> = Vec::new();
    for value in malformed_numbers {
        let v = encode(value);
        refused.extend([
            format!("/api/builds?limit={v}"),
            format!("/api/builds?before={v}"),
            format!("/api/builds/{id}/logs?offset={v}"),
            format!("/api/builds/{id}/logs?attempt={v}"),
            format!("/api/events?offset={v}"),
            format!("/api/events?build={v}"),
        ]);
    }
    refused.extend([
        "/api/builds?limit=0".to_string(),
        "/api/builds?limit=501".to_string(),
        "/api/builds?limit=4294967296".to_string(),
        "/api/builds?before=0".to_string(),
        "/api/builds?before=9223372036854775808".to_string(),
        format!("/api/builds/{id}/logs?attempt=0"),
        format!("/api/builds/{id}/logs?attempt=2"),
        format!("/api/builds/{id}/logs?attempt=9223372036854775807"),
        "/api/events?build=0".to_string(),
    ]);
    for target in &refused {
        let (status, _, reply) = get(target);
        assert_json_error(target, status, &reply);
    }
    // Representable but beyond the end: an empty answer, promptly.
    for target in [
        format!("/api/builds/{id}/logs?offset=18446744073709551615"),
        "/api/builds?before=9223372036854775807&limit=500".to_string(),
    ] {
        let t = Instant::now();
        let (status, _, reply) = get(&target);
        assert_eq!(
            status,
            200,
            "{target}: {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{target}");
    }
    // Unknown parameters are refused, not ignored.
    for target in [
        "/api/builds?offset=1",
        "/api/builds?limit=1&limit=2",
        "/api/builds?order=id;drop",
    ] {
        let (status, _, reply) = get(target);
        assert_json_error(target, status, &reply);
    }
    // Methods and protocol junk.
    for request in [
        &b"PUT /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        b"PATCH /api/repos/r HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"TRACE /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /api/health HTTP/9.9\r\n\r\n",
        b"GET /api/health\xff HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{}",
        b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\nzz\r\n",
    ] {
        let (status, _, reply) = raw(port, request);
        assert_json_error(&String::from_utf8_lossy(request), status, &reply);
    }
    // The absolute form is valid HTTP/1.1; the authority is ignored, and
    // the Host header must name this daemon.
    let (status, _, _) = raw(
        port,
        b"GET http://evil.example.org/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let (status, _, reply) = raw(
        port,
        b"GET http://evil.example.org/api/health HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n",
    );
    let value = assert_json_error("a host it does not serve", status, &reply);
    assert_eq!(value["error"]["field"], "host");

    // Nothing was created or changed, and the daemon is fine.
    assert_eq!(count(&conn), rows_before, "rows were written");
    assert_eq!(tree(&daemon.state()), files_before, "files were written");
    assert_eq!(tree(daemon.dir.as_path()).len(), outside_before.len());
    assert!(daemon.repo_path("r").join("HEAD").is_file());
    integrity_ok(&conn);
    assert_healthy(&mut daemon);
    let (status, reply) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "main", "commit": commit}),
    );
    assert_eq!(status, 201, "{reply}");
}
