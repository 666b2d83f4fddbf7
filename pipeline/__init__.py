"""What the stages share: messages, channels, the stage runtime, the database, SES."""
