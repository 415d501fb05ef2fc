//! Workers for tests: in process on the test's queue (`TestApp::start_worker`), or the real
//! `wharf-worker` binary (`TestApp::spawn_worker_process`).

use wharf_shared::config::Settings;

use crate::{TestApp, process};

/// An in-process worker on the test's queue; stops when dropped.
pub struct TestWorker {
    stop: tokio_util::sync::CancellationToken,
    pub worker_id: String,
    handle: wharf_worker::startup::Worker,
}

impl TestWorker {
    /// Where the worker serves /metrics (with `WHARF_METRICS_LISTEN` set), once bound.
    pub async fn metrics_addr(&self) -> std::net::SocketAddr {
        for _ in 0..200 {
            if let Some(a) = self.handle.metrics.addr.get() {
                return *a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the worker never served its metrics");
    }

    /// Waits until the worker runs no export (20 s at most).
    pub async fn idle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.handle.running() > 0 {
            assert!(std::time::Instant::now() < deadline, "worker still busy");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Starts a worker in process: heartbeats every 100 ms (and, from `test_settings`, 5 MiB
    /// parts), so tests see progress and multipart uploads on modest data.
    pub async fn start_worker(&self) -> TestWorker {
        self.start_worker_with(|_| {}).await
    }

    /// An in-process worker with test timings: heartbeats every 100 ms, a
    /// reconciler every 200 ms that re-pushes exports unclaimed for 2 s.
    pub async fn start_worker_with(
        &self,
        tweak: impl FnOnce(&mut wharf_worker::startup::Worker),
    ) -> TestWorker {
        let mut worker = wharf_worker::startup::Worker::new(&self.settings, self.pool.clone())
            .await
            .expect("worker");
        worker.ctx.heartbeat = std::time::Duration::from_millis(100);
        worker.timing.reconcile_every = std::time::Duration::from_millis(200);
        worker.timing.requeue_after = std::time::Duration::from_secs(2);
        tweak(&mut worker);
        let worker_id = worker.ctx.worker_id.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = worker.clone();
        tokio::spawn(worker.run(stop.clone()));
        TestWorker {
            stop,
            worker_id,
            handle,
        }
    }
}

/// A `wharf-worker` process (the real binary) on the app's queue and database.
pub struct WorkerProcess {
    child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit (after a signal); true if it did within `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `wharf-worker` command with the services of `s`, a clean environment and `database_url`.
pub fn worker_command(
    bin: &std::path::Path,
    s: &Settings,
    database_url: &str,
) -> std::process::Command {
    use secrecy::ExposeSecret;
    let mut cmd = std::process::Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .envs(s.redis_url.as_ref().map(|url| ("REDIS_URL", url)))
        .env("WHARF_QUEUE", &s.queue)
        .env(
            "WHARF_S3_ENDPOINT",
            s.s3.endpoint.clone().unwrap_or_default(),
        )
        .env("WHARF_S3_BUCKET", &s.s3.bucket)
        .env(
            "WHARF_S3_ACCESS_KEY",
            s.s3.access_key.clone().unwrap_or_default(),
        )
        .env(
            "WHARF_S3_SECRET_KEY",
            s.s3.secret_key
                .as_ref()
                .map(|k| k.expose_secret().to_string())
                .unwrap_or_default(),
        )
        .env("WHARF_STORE", s.store.to_string())
        .env("WHARF_SIGNING_KEYS", "k1:test-secret-one");
    cmd
}

/// The `wharf-worker` binary built beside this test binary (`cargo test --workspace` builds it).
pub fn worker_binary() -> std::path::PathBuf {
    process::binary("wharf-worker")
}

impl TestApp {
    pub fn database_url(&self) -> String {
        let db = self
            .pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_string();
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => base,
        }
    }

    /// Starts a real worker process with `concurrency` slots.
    pub fn spawn_worker_process(&self, concurrency: usize) -> WorkerProcess {
        self.spawn_worker_process_with(concurrency, &[])
    }

    /// A real worker process with extra environment (e.g. a short `WHARF_LEASE`).
    pub fn spawn_worker_process_with(
        &self,
        concurrency: usize,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let mut cmd = worker_command(&worker_binary(), &self.settings, &self.database_url());
        cmd.env("WHARF_WORKER_CONCURRENCY", concurrency.to_string())
            .envs(env.iter().copied());
        let (child, log) = process::spawn_logged(cmd, "wharf-worker");
        WorkerProcess { child, log }
    }
}
