//! bottle core (in progress)
