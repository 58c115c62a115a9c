//! Microsoft Graph simulator. (sim helper)
