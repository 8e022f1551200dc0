//! Sans-IO core of the Slipstream block transfer protocol (filled by the transfer engine issue).
