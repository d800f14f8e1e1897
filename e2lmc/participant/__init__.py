"""participant"""
