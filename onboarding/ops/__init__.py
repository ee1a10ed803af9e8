"""Operations: command line, demo data, scheduler runner, the development mailbox."""
