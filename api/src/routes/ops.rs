//! `GET /ops`: one server-rendered page for operators, behind HTTP Basic (user `admin`, password
//! `WHARF_ADMIN_TOKEN`): queue depth and age per project, running exports with progress, live
//! workers, recent failures with their codes, and completed exports per minute over the last
//! hour as an inline SVG. It refreshes itself (meta refresh) and loads nothing from anywhere.
//! Every value that came from a client (slugs, messages, worker names) is HTML-escaped.

use std::fmt::Write;

use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, get, web};
use base64::Engine;
use chrono::Utc;
use wharf_shared::Error;
use wharf_shared::auth::admin_token_matches;
use wharf_shared::repo::ops;

use crate::error::ApiError;
use crate::state::AppState;

/// Seconds between refreshes of the page.
pub const REFRESH_SECS: u32 = 5;

pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// What the request's HTTP Basic credentials are: none (a browser's first visit), or checked.
enum Credentials {
    Missing,
    Wrong,
    Right,
}

fn credentials(req: &HttpRequest, state: &AppState) -> Credentials {
    if req.headers().get(AUTHORIZATION).is_none() {
        return Credentials::Missing;
    }
    if authorized(req, state) {
        Credentials::Right
    } else {
        Credentials::Wrong
    }
}

fn authorized(req: &HttpRequest, state: &AppState) -> bool {
    let Some(configured) = state.settings.admin_token.as_ref() else {
        return false;
    };
    let Some(encoded) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    match text.split_once(':') {
        Some(("admin", password)) => admin_token_matches(configured, password),
        _ => false,
    }
}

fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The operators' page (HTTP Basic: `admin` and the admin token).
#[utoipa::path(get, path = "/ops", tag = "operations", security(()),
    responses((status = 200, description = "The page", content_type = "text/html"),
        (status = 401, description = "HTTP Basic credentials missing or wrong", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many failed authentications from this address (WHARF_AUTH_FAILURES)", body = crate::error::ErrorEnvelope)))]
#[get("/ops")]
pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(refused) = refusal(&req, &state)? {
        return Ok(refused);
    }
    let pool = &state.pool;
    let (queue, projects, running, workers, failures, minutes) = tokio::try_join!(
        ops::queue_figures(pool),
        ops::queue_by_project(pool),
        ops::running(pool),
        ops::live_workers(pool),
        ops::recent_failures(pool),
        ops::per_minute(pool),
    )?;
    let now = Utc::now();
    let mut h = head(now, &queue, workers.len(), minutes.iter().sum::<i64>());
    projects_section(&mut h, &projects);
    workers_section(&mut h, &workers, now);
    running_section(&mut h, &running, now);
    failures_section(&mut h, &failures);
    h.push_str(r#"<section class="wide"><h2>Completed exports per minute, last hour</h2>"#);
    h.push_str(&chart(&minutes));
    h.push_str("</section></main></body></html>\n");
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        ))
        .body(h))
}

/// The operator's credentials (the admin token, as Basic or Bearer), under the failed-guess
/// budget: None when they are right, else the 401 that asks for them.
fn refusal(req: &HttpRequest, state: &AppState) -> Result<Option<HttpResponse>, ApiError> {
    let client = req.peer_addr().map(|a| a.ip());
    state.auth_failures.admit(client)?;
    let refused = match credentials(req, state) {
        Credentials::Right => false,
        Credentials::Missing => true,
        Credentials::Wrong => {
            state.auth_failures.failed(client);
            true
        }
    };
    if refused {
        let mut res = actix_web::ResponseError::error_response(&ApiError(Error::Unauthorized));
        res.headers_mut().insert(
            WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static(
                "Basic realm=\"wharf ops\", charset=\"UTF-8\"",
            ),
        );
        return Ok(Some(res));
    }
    Ok(None)
}

/// The page's style sheet: system fonts, tiles, tables and bars; no script, nothing fetched.
const STYLE: &str = r#":root { --ink:#1d2430; --muted:#6b7280; --line:#e5e7eb; --bg:#f7f8fa; --accent:#2563eb; --bad:#b42318; --ok:#067647; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; background:#fff; border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0; }
header .when { color:var(--muted); font-size:12px; margin-left:auto; }
main { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:16px; padding:16px 24px 32px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px; min-width:0; }
section.wide { grid-column:1/-1; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:0 0 10px; }
.tiles { display:flex; gap:12px; flex-wrap:wrap; }
.tile { flex:1; min-width:140px; background:var(--bg); border-radius:6px; padding:10px 12px; }
.tile b { display:block; font-size:24px; }
.tile span { color:var(--muted); font-size:12px; }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
code { font:12px ui-monospace,SFMono-Regular,Menlo,monospace; }
.bar { position:relative; height:8px; background:var(--line); border-radius:4px; min-width:120px; }
.bar i { position:absolute; left:0; top:0; bottom:0; background:var(--accent); border-radius:4px; }
.code { color:var(--bad); font-weight:600; }
.empty { color:var(--muted); font-style:italic; }
.msg { color:var(--muted); max-width:420px; overflow-wrap:anywhere; }
svg text { font-size:10px; fill:var(--muted); }
"#;

/// The page's head, style and the queue's tiles.
fn head(
    now: chrono::DateTime<Utc>,
    queue: &ops::QueueFigures,
    workers: usize,
    completed_last_hour: i64,
) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECS}">
<title>Wharf · ops</title>
<style>
{STYLE}</style></head><body>
<header><h1>Wharf · operations</h1><span class="when">{} UTC · refreshes every {REFRESH_SECS} s</span></header>
<main>
<section class="wide"><h2>Queue</h2><div class="tiles">
<div class="tile"><b>{}</b><span>queued</span></div>
<div class="tile"><b>{}</b><span>running</span></div>
<div class="tile"><b>{}</b><span>oldest queued</span></div>
<div class="tile"><b>{}</b><span>live workers</span></div>
<div class="tile"><b>{}</b><span>completed, last hour</span></div>
</div></section>
"#,
        now.format("%Y-%m-%d %H:%M:%S"),
        queue.queued,
        queue.running,
        if queue.queued > 0 {
            age(queue.oldest_queued_seconds)
        } else {
            "—".into()
        },
        workers,
        completed_last_hour,
    );

    h
}

fn projects_section(h: &mut String, projects: &[ops::ProjectQueue]) {
    h.push_str("<section><h2>Queue by project</h2>");
    if projects.is_empty() {
        h.push_str(r#"<p class="empty">Nothing queued or running.</p>"#);
    } else {
        h.push_str("<table><tr><th>project</th><th class=num>queued</th><th class=num>running</th><th class=num>oldest queued</th></tr>");
        for p in projects {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
                escape(&p.slug),
                p.queued,
                p.running,
                p.oldest_queued_seconds.map_or("—".into(), age)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

fn workers_section(h: &mut String, workers: &[ops::LiveWorker], now: chrono::DateTime<Utc>) {
    h.push_str("<section><h2>Live workers</h2>");
    if workers.is_empty() {
        h.push_str(r#"<p class="empty">No worker seen in the last 30 s.</p>"#);
    } else {
        h.push_str("<table><tr><th>worker</th><th>host</th><th class=num>running</th><th class=num>last seen</th></tr>");
        for w in workers {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=num>{} / {}</td><td class=num>{} ago</td></tr>",
                escape(&w.id),
                escape(&w.host),
                w.running,
                w.concurrency,
                age((now - w.last_seen).num_milliseconds() as f64 / 1000.0)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

fn running_section(h: &mut String, running: &[ops::RunningExport], now: chrono::DateTime<Utc>) {
    h.push_str(r#"<section class="wide"><h2>Running exports</h2>"#);
    if running.is_empty() {
        h.push_str(r#"<p class="empty">No export is running.</p>"#);
    } else {
        h.push_str("<table><tr><th>export</th><th>project</th><th>format</th><th>progress</th><th class=num>rows</th><th class=num>running for</th><th>worker</th></tr>");
        for r in running {
            let total = r.rows_total.unwrap_or(0);
            let pct = if total > 0 {
                (r.rows_written as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
            } else {
                0.0
            };
            let _ = write!(
                h,
                r#"<tr><td><code>{}</code></td><td>{}</td><td>{}{}</td><td><div class="bar" title="{pct:.0} %"><i style="width:{pct:.1}%"></i></div></td><td class=num>{} / {}</td><td class=num>{}</td><td><code>{}</code></td></tr>"#,
                r.id,
                escape(&r.slug),
                escape(&r.format),
                if r.scope == "table" {
                    String::new()
                } else {
                    format!(" ({})", escape(&r.scope))
                },
                r.rows_written,
                r.rows_total.map_or("?".into(), |t| t.to_string()),
                r.started_at.map_or("—".into(), |s| age(
                    (now - s).num_milliseconds() as f64 / 1000.0
                )),
                escape(r.worker_id.as_deref().unwrap_or("—")),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

fn failures_section(h: &mut String, failures: &[ops::Failure]) {
    h.push_str(r#"<section class="wide"><h2>Recent failures</h2>"#);
    if failures.is_empty() {
        h.push_str(r#"<p class="empty">No failure in the last day.</p>"#);
    } else {
        h.push_str("<table><tr><th>when</th><th>export</th><th>project</th><th>format</th><th>code</th><th>message</th></tr>");
        for f in failures {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class="code">{}</td><td class="msg">{}</td></tr>"#,
                f.completed_at
                    .map_or("—".into(), |t| t.format("%H:%M:%S").to_string()),
                f.id,
                escape(&f.slug),
                escape(&f.format),
                f.error_code.map_or("—", |c| c.as_str()),
                escape(f.error_message.as_deref().unwrap_or("")),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

/// 60 bars, oldest left; the y axis labelled with the peak.
fn chart(minutes: &[i64]) -> String {
    let (w, hgt, left, bottom) = (1200.0, 140.0, 36.0, 18.0);
    let peak = minutes.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = (w - left) / minutes.len().max(1) as f64;
    let mut s = format!(
        r##"<svg viewBox="0 0 {w} {hgt}" width="100%" height="{hgt}" preserveAspectRatio="xMinYMin meet" role="img" aria-label="completed exports per minute"><line x1="{left}" y1="{y0}" x2="{w}" y2="{y0}" stroke="#e5e7eb"/><text x="0" y="10">{peak}</text><text x="0" y="{y0}">0</text>"##,
        y0 = hgt - bottom,
        peak = peak as i64,
    );
    for (i, n) in minutes.iter().enumerate() {
        let bar = (*n as f64 / peak) * (hgt - bottom - 6.0);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2563eb\" rx=\"1\"><title>{n}</title></rect>",
            left + i as f64 * slot + 1.0,
            hgt - bottom - bar,
            (slot - 2.0).max(1.0),
            bar
        );
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="{hgt}">60 min ago</text><text x="{}" y="{hgt}" text-anchor="end">now</text></svg>"#,
        w
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_become_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
