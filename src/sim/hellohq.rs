//! helloHQ simulator. (sim helper)
