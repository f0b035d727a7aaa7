"""Generated from proto/authz/api/v1/*.proto by ``make proto``: do not edit."""
