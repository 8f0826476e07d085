//! skald-storage
