"""The empathetic-dialogue track (EmpatheticDialogues): notebooks 07-09."""
