//! TEMPORARY STUB
use crate::config::RepoConfig;
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("x {path:?}")]
    NotARepository { path: PathBuf },
}
pub struct RepoStatus {
    pub head: String,
    pub base_commit: String,
    pub remote_url: Option<String>,
    pub work_tree_dirty: bool,
}
pub fn inspect(cfg: &RepoConfig) -> Result<RepoStatus, RepoError> {
    Err(RepoError::NotARepository {
        path: cfg.path.clone(),
    })
}
pub fn commit_file(
    cfg: &RepoConfig,
    _rel_path: &Path,
    _contents: &[u8],
    _message: &str,
) -> Result<String, RepoError> {
    Err(RepoError::NotARepository {
        path: cfg.path.clone(),
    })
}
pub fn push_base(cfg: &RepoConfig) -> Result<(), RepoError> {
    Err(RepoError::NotARepository {
        path: cfg.path.clone(),
    })
}
