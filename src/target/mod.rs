//! The directory target: where restored trees land. The [`writer`] makes
//! entries and writes data; [`full`] restores a full image into an empty
//! directory; [`apply`] brings a restored tree from one snapshot to the
//! next, checked before anything visible changes ([`survey`], [`pending`]);
//! [`state`] records which snapshot a target holds; [`select`] and
//! [`create`] pick and make part of a snapshot, for restore and volume
//! extraction alike. Nothing here reads a medium: streams come in already
//! opened, from the layer above.

pub mod apply;
pub mod create;
pub mod full;
pub mod pending;
pub mod select;
pub mod state;
pub mod summary;
pub mod survey;
pub mod writer;
