"""Reading and writing pipeline rows (JSONL, Parquet, Hugging Face datasets), with validation."""
