//! bottle's smolmachines backend (in progress)
