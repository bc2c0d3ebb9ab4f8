"""Operations: storage (local and S3), the local stack, the DVC runner."""
