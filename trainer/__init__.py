"""mmsynth.trainer"""
