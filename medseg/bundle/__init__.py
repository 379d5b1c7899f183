"""medseg.bundle"""
