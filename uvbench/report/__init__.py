"""Run folders, call records and the reports built from them."""
