//! bmaptool 2.0 block maps: generate from a sparse image, parse for flashing.
//! OWNER: flash helper.
