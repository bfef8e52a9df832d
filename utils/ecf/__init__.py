"""The emotion-cause track (SemEval-2024 Task 3, ECF 2.0): notebooks 01-06."""
