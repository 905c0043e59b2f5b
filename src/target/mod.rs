//! The directory target: where restored trees land. The [`writer`] makes
//! entries and writes data; [`full`] restores a full image into an empty
//! directory; [`apply`] brings a restored tree from one snapshot to the
//! next, checked before anything visible changes ([`survey`], [`pending`]);
//! [`state`] records which snapshot a target holds; [`select`] and
//! [`create`] pick and make part of a snapshot, for restore and volume
//! extraction alike; [`summary`] is what a restore reports. Streams are
//! read through the stream layer (an input is opened as an image set
//! there); nothing here knows what kind of medium they come from.

pub mod access;
pub mod apply;
pub mod create;
pub mod delta;
pub mod exchange;
pub mod flags;
pub mod full;
pub mod pending;
pub mod select;
pub mod state;
pub mod summary;
pub mod survey;
pub mod writer;
