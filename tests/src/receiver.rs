//! A webhook receiver for tests: a real HTTP/1.1 listener on a free port that records what it
//! gets and answers from a script.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the receiver got: its headers (lower-case names) and body.
pub type Got = (HashMap<String, String>, Vec<u8>);

/// What the receiver answers each request with, in order (`None`: hold the request open and
/// never answer); after the script, 200.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    pub async fn start(script: Vec<Option<u16>>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers: HashMap<String, String> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    let answer = script
                        .lock()
                        .ok()
                        .and_then(|mut q| q.pop_front())
                        .unwrap_or(Some(200));
                    if let Ok(mut g) = seen.lock() {
                        g.push((headers, body));
                    }
                    match answer {
                        Some(code) => {
                            let res = format!(
                                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            s.write_all(res.as_bytes()).await.ok();
                        }
                        None => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                });
            }
        });
        Receiver { url, got }
    }

    pub fn count(&self) -> usize {
        self.got.lock().map(|g| g.len()).unwrap_or(0)
    }

    pub async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the receiver got {} of {n} deliveries",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn get(&self, i: usize) -> Got {
        self.got.lock().expect("lock")[i].clone()
    }
}

/// Whether `header` (`t=…,v1=…`) signs `body` with `secret`.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}
