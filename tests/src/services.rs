//! Private service processes for tests that stop, pause, flush or restart them: s3s-fs and
//! redis-server, each on a free port of its own.

use std::net::TcpListener;

/// A private s3s-fs process, for tests that stop, pause or restart the object store.
pub struct S3Server {
    pub endpoint: String,
    port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s3s_fs_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("WHARF_S3S_FS") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = std::path::Path::new(&home).join(".cache/wharf/s3s/bin/s3s-fs");
    if cached.exists() {
        cached
    } else {
        "s3s-fs".into()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing listens on port {port}");
}

fn signal_pid(sig: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

impl S3Server {
    pub async fn start() -> S3Server {
        let dir = std::env::temp_dir().join(format!("wharf-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = S3Server {
            endpoint: String::new(),
            port: free_port(),
            child: None,
            dir: TempDir(dir),
        };
        s.endpoint = format!("http://127.0.0.1:{}", s.port);
        s.restart().await;
        s
    }

    /// Starts the server again on the same port and data (after `kill`).
    pub async fn restart(&mut self) {
        let child = std::process::Command::new(s3s_fs_binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                "wharf",
                "--secret-key",
                "wharf-secret",
            ])
            .arg(&self.dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs starts (scripts/services.sh installs it)");
        self.child = Some(child);
        wait_port(self.port).await;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Freezes the server (SIGSTOP): requests hang until `resume`.
    pub fn pause(&self) {
        signal_pid("-STOP", self.pid());
    }

    pub fn resume(&self) {
        signal_pid("-CONT", self.pid());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A private redis-server process, for tests that flush, kill or restart Redis.
pub struct RedisServer {
    pub url: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = free_port();
        let mut r = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
        };
        r.restart().await;
        r
    }

    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_port(self.port).await;
    }

    pub fn flushall(&self) {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        let mut conn = client.get_connection().expect("connect");
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
