"""Sources, shard writer and reader, parquet manifests, exporters."""
