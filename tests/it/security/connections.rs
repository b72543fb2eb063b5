//! Connections cannot be held: slow bodies, idle connections, too many from one address.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_idle_connections_are_cut() {
    let gw = gateway(
        "[server]\nbody_read_timeout_ms = 400\nupload_min_bytes_per_sec = 100000\n\
         header_read_timeout_ms = 500\nidle_timeout_ms = 700\n",
    )
    .await;
    let address = gw.base.trim_start_matches("http://").to_owned();
    let token = format!("Bearer {}", gw.key);

    // A JSON body sent a few bytes at a time, never finished: 408, and the task is freed.
    let started = std::time::Instant::now();
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nAuthorization: {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // An upload slower than the minimum pace: 408 from the gateway, not a hung upload.
    let mut socket = TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /v1/files HTTP/1.1\r\nHost: g\r\nAuthorization: {token}\r\n\
                 Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000\r\n\r\n--b\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let dribble = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if socket.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), dribble).await;
    let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // HTTP/1.1: a connection that never sends a request, and one idle after its request.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    let mut kept = TcpStream::connect(&address).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = kept.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut kept, Duration::from_secs(3)).await);

    // HTTP/2: a client that answers pings but sends nothing is closed too, before and after
    // its first request.
    for send_first in [false, true] {
        let stream = TcpStream::connect(&address).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let driver = TaskTracker::new().spawn(connection);
        if send_first {
            let request = hyper::Request::builder()
                .uri(format!("{}/health", gw.base))
                .body(Full::new(Bytes::new()))
                .unwrap();
            assert_eq!(h2_send(&mut sender, request).await.0, 200);
        }
        let ended = tokio::time::timeout(Duration::from_secs(4), driver).await;
        assert!(
            ended.is_ok(),
            "an idle h2 connection was kept (first request: {send_first})"
        );
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tollgate_connections_closed_total{reason=\"idle\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_connections_than_its_cap() {
    let gw = gateway("[server]\nmax_connections_per_ip = 3\n").await;
    let address = gw.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // The fourth is closed at once, without an answer.
    let mut fourth = TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await);
    // One given back makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = send(
        &address,
        b"GET /health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tollgate_connections_closed_total{reason=\"per_ip_cap\"}"),
        "{metrics}"
    );
    drop(held);
    gw.stop().await;
}

/// Reads what the server sends until it closes (or `wait` passes).
async fn read_answer(socket: &mut TcpStream, wait: Duration) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(wait, socket.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Whether the server closes `socket` within `wait` (reads end, or the socket is reset).
async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let closed = async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, closed).await.is_ok()
}
