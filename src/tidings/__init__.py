"""tidings: worktree stand-in (untracked; main owns the real package __init__)."""
