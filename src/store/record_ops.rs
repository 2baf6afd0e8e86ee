//! The tag and image records' operations on the store (blocking; see `face` for the async
//! ones): the records themselves stay private to the store.

use super::{ImageRecord, Store, TagRecord};
use crate::oci::{Digest, RepoName, Tag};
use std::io;

impl Store {
    pub fn get_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        self.records.get_tag(upstream, name, tag)
    }

    pub fn put_tag(&self, upstream: &str, name: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<()> {
        self.records.put_tag(upstream, name, tag, rec)
    }

    pub fn remove_tag(&self, upstream: &str, name: &RepoName, tag: &Tag) -> io::Result<()> {
        self.records.remove_tag(upstream, name, tag)
    }

    /// A repository's tags and their records.
    pub fn tags(&self, upstream: &str, name: &RepoName) -> io::Result<Vec<(Tag, TagRecord)>> {
        self.records.tags(upstream, name)
    }

    /// Record a pull of an image (see `Records::note_pull`).
    pub fn note_pull(&self, upstream: &str, name: &RepoName, digest: &Digest, media_type: &str) -> io::Result<()> {
        self.records.note_pull(upstream, name, digest, media_type)
    }

    pub fn put_image(&self, upstream: &str, name: &RepoName, digest: &Digest, rec: &ImageRecord) -> io::Result<()> {
        self.records.put_image(upstream, name, digest, rec)
    }

    pub fn remove_image(&self, upstream: &str, name: &RepoName, digest: &Digest) -> io::Result<()> {
        self.records.remove_image(upstream, name, digest)
    }

    /// A repository's image records.
    pub fn images(&self, upstream: &str, name: &RepoName) -> io::Result<Vec<(Digest, ImageRecord)>> {
        self.records.images(upstream, name)
    }

    /// Every repository with records, by upstream.
    pub fn repositories(&self) -> io::Result<Vec<(String, RepoName)>> {
        self.records.repositories()
    }
}
