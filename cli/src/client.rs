//! The API as the CLI talks to it: the key, the failures it reports, and their exit codes.

use serde_json::Value;

/// A failure to report: the server's code and message, or ours.
pub(crate) struct Failure {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) usage: bool,
}

pub(crate) type Outcome<T> = Result<T, Failure>;

pub(crate) fn fail(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.into(),
        message: message.into(),
        usage: false,
    }
}

pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: "USAGE".into(),
        message: message.into(),
        usage: true,
    }
}

pub(crate) fn net(e: reqwest::Error) -> Failure {
    fail("NETWORK", format!("cannot reach the API: {e}"))
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) key: String,
    pub(crate) tty: bool,
}

impl Client {
    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
    }

    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
    }

    /// The JSON body of a 2xx answer, else the server's error code and message.
    pub(crate) async fn json(&self, req: reqwest::RequestBuilder) -> Outcome<Value> {
        let res = req.send().await.map_err(net)?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(server_error(status.as_u16(), &body))
        }
    }

    /// Plain lines when not on a terminal.
    pub(crate) fn say(&self, line: &str) {
        if !self.tty {
            println!("{line}");
        }
    }
}

pub(crate) fn server_error(status: u16, body: &Value) -> Failure {
    let code = body["error"]["code"]
        .as_str()
        .map_or_else(|| format!("HTTP_{status}"), str::to_string);
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("the server refused the request")
        .to_string();
    fail(&code, message)
}
