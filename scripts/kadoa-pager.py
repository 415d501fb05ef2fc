#!/usr/bin/env python3
"""A Kadoa SDK user's loop, against Wharf: page through a workflow's data with page/limit until
page == totalPages, as Kadoa's own clients do. Prints {"rows": N, "ids": [...], "pages": P}.
Usage: kadoa-pager.py BASE_URL API_KEY WORKFLOW_ID [LIMIT]"""
import json
import sys

import requests


def main() -> None:
    base, key, workflow = sys.argv[1], sys.argv[2], sys.argv[3]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    session = requests.Session()
    session.headers["x-api-key"] = key
    ids, page, pages = [], 1, 0
    while True:
        res = session.get(
            f"{base}/v4/workflows/{workflow}/data",
            params={"page": page, "limit": limit, "format": "JSON", "order": "ASC",
                    "includeAnomalies": "false"},
            timeout=60,
        )
        res.raise_for_status()
        body = res.json()
        ids.extend(row["_id"] for row in body["data"])
        pages += 1
        if body["pagination"]["page"] >= body["pagination"]["totalPages"]:
            break
        page += 1
    print(json.dumps({"rows": len(ids), "ids": ids, "pages": pages}))


if __name__ == "__main__":
    main()
