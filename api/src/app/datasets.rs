//! A dataset's downloads (API.md "Large exports"): the manifest with a signed link per file,
//! one file served exactly as a single-file export is (through `files::stream`), and every
//! file as one ZIP streamed in bounded memory.

use std::io::Write;

use actix_web::HttpResponse;
use actix_web::http::header;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;
use wharf_shared::Error;
use wharf_shared::domain::export as dom;
use wharf_shared::export::zipstream::ZipStream;
use wharf_shared::repo::exports::{self, DatasetFile, ExportRecord};
use wharf_shared::views::file_dtos;

use crate::error::ApiError;
use crate::state::AppState;

/// One file of a dataset as a record the download code serves: its object, size, sha256 (the
/// ETag), type and name.
fn file_record(rec: &ExportRecord, f: &DatasetFile) -> ExportRecord {
    let spec = &rec.params.0;
    let mut r = rec.clone();
    r.object_key = Some(f.object_key.clone());
    r.size_bytes = Some(f.size_bytes);
    r.row_count = Some(f.row_count);
    r.sha256 = Some(f.sha256.clone());
    r.content_type = Some(dom::content_type(spec.format, spec.compression).to_string());
    r.file_name = Some(f.path.rsplit('/').next().unwrap_or(&f.path).to_string());
    r
}

/// The file at `path` of a downloadable dataset, as a record to serve; 404 naming the path
/// when the dataset has none.
pub async fn one_file(
    state: &AppState,
    rec: &ExportRecord,
    path: &str,
) -> Result<ExportRecord, ApiError> {
    rec.downloadable(Utc::now())?;
    if !rec.is_dataset() {
        return Err(Error::invalid("path: this export is one file, not a dataset").into());
    }
    let file = exports::file(&state.pool, rec.id, path)
        .await?
        .ok_or(Error::NotFound("file"))?;
    Ok(file_record(rec, &file))
}

/// The manifest of a downloadable dataset with a freshly signed link per file.
pub async fn manifest(state: &AppState, rec: &ExportRecord) -> Result<HttpResponse, ApiError> {
    rec.downloadable(Utc::now())?;
    let files = exports::files(&state.pool, rec.id).await?;
    let body = serde_json::json!({
        "exportId": rec.id,
        "format": rec.format,
        "compression": rec.compression,
        "rowCount": rec.row_count,
        "files": file_dtos(&state.settings, rec, &files),
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

/// The status of a COMPLETED dataset with its files (others unchanged).
pub async fn add_files(
    state: &AppState,
    rec: &ExportRecord,
    dto: &mut wharf_shared::views::ExportDto,
) -> Result<(), ApiError> {
    if rec.is_dataset() && rec.downloadable(Utc::now()).is_ok() {
        let files = exports::files(&state.pool, rec.id).await?;
        let dtos = file_dtos(&state.settings, rec, &files);
        wharf_shared::views::with_files(&state.settings, rec, dto, dtos);
    }
    Ok(())
}

/// Writes into a channel of byte chunks (the ZIP's output, toward the response).
struct ChannelWriter(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the reading task hands the ZIP's writing thread: an entry's start, its bytes, its end.
enum Entry {
    Begin(String),
    Bytes(Bytes),
    End,
}

/// Every file of a downloadable dataset (and `manifest.json`) as one ZIP, streamed: a task
/// reads each object from the store, a blocking thread writes the ZIP (stored entries), both
/// over bounded channels, so memory stays bounded by a few chunks whatever the dataset.
pub async fn zip(state: &AppState, rec: &ExportRecord) -> Result<HttpResponse, ApiError> {
    rec.downloadable(Utc::now())?;
    let files = exports::files(&state.pool, rec.id).await?;
    let (out_tx, out_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let (entry_tx, mut entry_rx) = mpsc::channel::<Entry>(8);
    let created = rec.created_at;
    let failed = out_tx.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut zip = ZipStream::new(ChannelWriter(out_tx), created);
        while let Some(entry) = entry_rx.blocking_recv() {
            match entry {
                Entry::Begin(name) => zip.begin(&name)?,
                Entry::Bytes(b) => zip.write_all(&b)?,
                Entry::End => {
                    zip.end()?;
                }
            }
        }
        zip.finish().map(|_| ())
    });
    let store = state.store.clone();
    let manifest_key = rec.object_key.clone();
    tokio::spawn(async move {
        let mut entries: Vec<(String, String)> =
            files.into_iter().map(|f| (f.path, f.object_key)).collect();
        if let Some(key) = manifest_key {
            entries.push(("manifest.json".into(), key));
        }
        let sent = async {
            for (path, key) in entries {
                let mut body = store.get(&key, None).await?;
                if entry_tx.send(Entry::Begin(path)).await.is_err() {
                    return Ok(());
                }
                while let Some(chunk) = body.next().await {
                    if entry_tx.send(Entry::Bytes(chunk?)).await.is_err() {
                        return Ok(());
                    }
                }
                if entry_tx.send(Entry::End).await.is_err() {
                    return Ok(());
                }
            }
            Ok::<(), wharf_shared::store::StoreError>(())
        };
        let read = sent.await;
        drop(entry_tx);
        let wrote = writer.await;
        let err = match (read, wrote) {
            (Err(e), _) => Some(e.to_string()),
            (_, Ok(Err(e))) => Some(e.to_string()),
            (_, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        if let Some(e) = err {
            // The client gets a cut archive (its central directory missing), never a whole one.
            tracing::warn!(error = %e, "dataset ZIP stopped midway");
            failed.send(Err(std::io::Error::other(e))).await.ok();
        }
    });
    let name = format!("{}.zip", rec.id);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/zip"))
        .insert_header((header::CONTENT_DISPOSITION, dom::content_disposition(&name)))
        .streaming(futures::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })))
}

/// A cancelled dataset's files, removed in the background (the janitor's pass covers a process
/// that stops first): parts still running delete what they write once they hear of the cancel.
pub fn remove_files_soon(state: &AppState, rec: &ExportRecord) {
    if !rec.is_dataset() {
        return;
    }
    let (pool, store, id) = (state.pool.clone(), state.store.clone(), rec.id);
    tokio::spawn(async move {
        let removed = wharf_shared::export::dataset::remove_files(&pool, &*store, id).await;
        tracing::info!(export_id = %id, removed, "cancelled dataset's files removed");
    });
}
