#!/usr/bin/env python3
"""The ADBC peer of wharf-bench: a query's rows through ADBC's PostgreSQL driver (binary COPY into
Arrow) streamed batch by batch into pyarrow's ParquetWriter (zstd), as a user of Arrow tools would
export them. Prints the seconds it took. Needs adbc-driver-postgresql and pyarrow (PyPI).

Usage: adbc-peer.py DATABASE_URL QUERY OUT.parquet
"""
import sys
import time

import adbc_driver_postgresql.dbapi as pg
import pyarrow.parquet as pq


def main() -> None:
    url, query, out = sys.argv[1:4]
    started = time.perf_counter()
    with pg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        writer = None
        for batch in cur.fetch_record_batch():
            if writer is None:
                writer = pq.ParquetWriter(out, batch.schema, compression="zstd")
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
    print(f"{time.perf_counter() - started:.3f}")


if __name__ == "__main__":
    main()
