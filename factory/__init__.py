"""mmsynth.factory"""
