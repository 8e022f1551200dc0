//! Transfer engine: manifests, destinations, transfers and the UDP driver (filled by the transfer engine issue).
