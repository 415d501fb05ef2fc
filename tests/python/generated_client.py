"""Drives Wharf with a client openapi-python-client generated from its /openapi.json, unchanged:
create a workflow, ingest NDJSON, export, poll, download the bytes. Prints the downloaded file.

Usage: generated_client.py CLIENT_PARENT_DIR BASE_URL API_KEY
(CLIENT_PARENT_DIR holds the generated package `wharf_client`.)
"""
import sys
import time

sys.path.insert(0, sys.argv[1])
base, key = sys.argv[2], sys.argv[3]

from wharf_client import AuthenticatedClient  # noqa: E402
from wharf_client.api.downloads import download_export  # noqa: E402
from wharf_client.api.exports import get_export, post_export  # noqa: E402
from wharf_client.api.runs import create_run  # noqa: E402
from wharf_client.api.workflows import create_workflow  # noqa: E402
from wharf_client.models import (  # noqa: E402
    CreateWorkflow, ExportDto, ExportRequest, Field, FieldType, Format, RunDto, WorkflowDto)
from wharf_client.types import File  # noqa: E402

client = AuthenticatedClient(base_url=base, token=key, prefix="", auth_header_name="x-api-key",
                             follow_redirects=False, raise_on_unexpected_status=True)

wf = create_workflow.sync(client=client, body=CreateWorkflow(name="Generated", schema=[
    Field(name="title", type_=FieldType.STRING),
    Field(name="price", type_=FieldType.NUMBER, nullable=True),
]))
assert isinstance(wf, WorkflowDto), wf

# NDJSON: the generator writes no function body for application/x-ndjson (it knows JSON, forms
# and octet-stream only), so the rows go through the generated client's own HTTP client.
ndjson = b'{"title": "a", "price": 1.5}\n{"title": "b,c", "price": null}\n'
res = client.get_httpx_client().post(f"/v1/workflows/{wf.id}/runs", content=ndjson,
                                     headers={"content-type": "application/x-ndjson"})
assert res.status_code == 201, res.text
run = RunDto.from_dict(res.json())
assert run.row_count == 2, run
# A JSON array: the generated function itself.
run2 = create_run.sync(wf.id, client=client, body=[{"title": "d", "price": 2}])
assert isinstance(run2, RunDto) and run2.row_count == 1, run2

created = post_export.sync(wf.id, client=client, body=ExportRequest(format_=Format.CSV, run_id=run.run_id))
assert created is not None and not hasattr(created, "error"), created
deadline = time.time() + 60
while True:
    status = get_export.sync(created.export_id, client=client, wait=5)
    assert isinstance(status, ExportDto), status
    if status.status.value in ("COMPLETED", "FAILED", "CANCELLED"):
        break
    assert time.time() < deadline, status
assert status.status.value == "COMPLETED", status
got = download_export.sync_detailed(created.export_id, client=client, mode="stream")
assert got.status_code == 200, got
assert isinstance(got.parsed, File), got.parsed
body = got.parsed.payload.read()
assert body == got.content
assert len(body) == status.size_bytes, (len(body), status.size_bytes)
sys.stdout.write(body.decode())
